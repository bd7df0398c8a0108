package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/x448/float16"
)

// PackedQ8 holds activations quantized to Q8_0 blocks of 32 for the packed
// products, laid out per column (a token's activation row): the block
// scales dx, the Q4_0 and Q8_0 corrections 8*sum(q)*dx and 128*sum(q)*dx,
// then the int8 values (see packed.c).
type PackedQ8 struct {
	buf   []byte
	N, NB int
	prep  []byte // GemmR4's form of the columns
	// prepped: prep holds the current values (products that share an
	// input, q/k/v and gate/up, prepare it once)
	prepped bool
}

func (a *PackedQ8) stride() int { return 44 * a.NB }

func (a *PackedQ8) col(c int) (dx, corr4, corr8 []float32, qx []int8) {
	b := a.buf[c*a.stride() : (c+1)*a.stride()]
	f := unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), 3*a.NB)
	return f[:a.NB], f[a.NB : 2*a.NB], f[2*a.NB:], unsafe.Slice((*int8)(unsafe.Pointer(&b[12*a.NB])), 32*a.NB)
}

// Column returns column c's block scales, Q4_0 and Q8_0 corrections and
// codes (views of a's buffer).
func (a *PackedQ8) Column(c int) (d, corr4, corr8 []float32, q []int8) { return a.col(c) }

// QuantizeQ8 quantizes n rows of k values (k a multiple of 32) into a,
// reusing its buffer: per block d = amax/127, q = x/d rounded half to even.
func QuantizeQ8(a *PackedQ8, x []float32, n, k int) {
	if k%32 != 0 || len(x) < n*k {
		panic(fmt.Sprintf("kernels: QuantizeQ8: %d rows of %d from %d values", n, k, len(x)))
	}
	a.N, a.NB, a.prepped = n, k/32, false
	need := n * a.stride()
	if cap(a.buf) < need {
		a.buf = make([]byte, need+64)
	}
	a.buf = a.buf[:need]
	for c := 0; c < n; c++ {
		if q8QuantSIMD(a, c, x[c*k:(c+1)*k]) {
			continue
		}
		dx, c4, c8, qx := a.col(c)
		for b := 0; b < a.NB; b++ {
			var amax float32
			for _, v := range x[c*k+32*b : c*k+32*b+32] {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := amax / 127
			var id float32
			if d != 0 {
				id = 1 / d
			}
			s := 0
			for j, v := range x[c*k+32*b : c*k+32*b+32] {
				q := int(math.RoundToEven(float64(v * id)))
				qx[32*b+j] = int8(q)
				s += q
			}
			dx[b], c4[b], c8[b] = d, 8*float32(s)*d, 128*float32(s)*d
		}
	}
}

// GemmPacked computes y[c*rows + r] = sum_k W[r,k] x_c[k] for the rows of a
// Q4_0 or Q8_0 weight (rows x k, packed rows) and the n quantized columns
// of a, split over threads by rows.
func GemmPacked(f FormatID, w []byte, rows, k int, a *PackedQ8, y []float32) {
	if f != Q4_0 && f != Q8_0 {
		panic("kernels: GemmPacked: format " + f.String())
	}
	if k != 32*a.NB || len(w) < rows*f.RowBytes(k) || len(y) < a.N*rows {
		panic(fmt.Sprintf("kernels: GemmPacked: %d x %d weight (%d bytes), %d columns of %d blocks, %d outputs", rows, k, len(w), a.N, a.NB, len(y)))
	}
	run := func(r0, r1 int) {
		if !gemmPackedSIMD(f, w, r0, r1, a, y, rows) {
			gemmPackedGo(f, w, r0, r1, a, y, rows)
		}
	}
	// rows of about 64 KB of weights per task, 16 rows (a cache line of
	// outputs) at least (serial while OpenBLAS's pool holds the cores:
	// see SetBLASThreads)
	per := max(16, (1<<16)/max(1, f.RowBytes(k)))
	if Serial(rows, per) {
		run(0, rows)
		return
	}
	ForRows(rows, per, 16, run)
}

// gemmPackedGo is the reference: exact integer dot products per block,
// scaled in float32 in the same order as the C kernels' scalar terms.
func gemmPackedGo(f FormatID, w []byte, r0, r1 int, a *PackedQ8, y []float32, ldy int) {
	nb, bw := a.NB, Formats[f].BlockBytes
	for c := 0; c < a.N; c++ {
		dx, c4, _, qx := a.col(c)
		for r := r0; r < r1; r++ {
			row := w[r*nb*bw : (r+1)*nb*bw]
			var sum float64
			for b := 0; b < nb; b++ {
				p := row[b*bw : (b+1)*bw]
				d := float16.Frombits(binary.LittleEndian.Uint16(p)).Float32()
				var dot int32
				if f == Q4_0 {
					for j := 0; j < 16; j++ {
						dot += int32(p[2+j]&15)*int32(qx[32*b+j]) + int32(p[2+j]>>4)*int32(qx[32*b+16+j])
					}
					sum += float64(float32(dot)*(d*dx[b])) - float64(d*c4[b])
				} else {
					for j := 0; j < 32; j++ {
						dot += int32(int8(p[2+j])) * int32(qx[32*b+j])
					}
					sum += float64(float32(dot) * (d * dx[b]))
				}
			}
			y[c*ldy+r] = float32(sum)
		}
	}
}

// R4 is a Q4_0 or Q8_0 matrix repacked for the VNNI kernel: rows in
// groups of four, per block the four rows' values side by side (Q8_0
// values stored + 128) and their fp16 scales (see packed.c). Repacking is
// exact: Unpack gives the original rows back.
type R4 struct {
	Format  FormatID
	W       []byte
	Scales  []uint16 // fp16, as in the blocks
	Rows, K int
}

// Repack repacks a Q4_0 or Q8_0 matrix of rows rows of k values; it
// returns nil where the kernel for it is missing (no AVX-512 VNNI, another
// format, or rows not a multiple of 4).
func Repack(f FormatID, data []byte, rows, k int) *R4 {
	if packedISA != 2 || !useSIMD || rows%4 != 0 || k%32 != 0 || (f != Q4_0 && f != Q8_0) {
		return nil
	}
	nb := k / 32
	bb := Formats[f].BlockBytes
	r := &R4{Format: f, W: make([]byte, rows*nb*(bb-2)), Scales: make([]uint16, rows*nb), Rows: rows, K: k}
	for row := 0; row < rows; row++ {
		g, i := row/4, row%4
		for b := 0; b < nb; b++ {
			src := data[(row*nb+b)*bb:]
			gb := r.W[(g*nb+b)*4*(bb-2):]
			if f == Q4_0 {
				// an array assignment, not copy: the 16 bytes move inline
				// instead of through a memmove call per block (4 of the 11
				// seconds a Llama-3-8B-shaped 4-layer model took to load)
				*(*[16]byte)(gb[16*i:]) = *(*[16]byte)(src[2:18])
			} else {
				for j := 0; j < 16; j++ {
					gb[16*i+j] = src[2+j] ^ 0x80
					gb[64+16*i+j] = src[18+j] ^ 0x80
				}
			}
			r.Scales[(g*nb+b)*4+i] = binary.LittleEndian.Uint16(src)
		}
	}
	return r
}

// Unpack writes the matrix back in its block format (rows of
// Format.RowBytes(K) bytes).
func (r *R4) Unpack(data []byte) {
	f, nb := r.Format, r.K/32
	bb := Formats[f].BlockBytes
	for row := 0; row < r.Rows; row++ {
		g, i := row/4, row%4
		for b := 0; b < nb; b++ {
			dst := data[(row*nb+b)*bb:]
			gb := r.W[(g*nb+b)*4*(bb-2):]
			binary.LittleEndian.PutUint16(dst, r.Scales[(g*nb+b)*4+i])
			if f == Q4_0 {
				copy(dst[2:18], gb[16*i:16*i+16])
			} else {
				for j := 0; j < 16; j++ {
					dst[2+j] = gb[16*i+j] ^ 0x80
					dst[18+j] = gb[64+16*i+j] ^ 0x80
				}
			}
		}
	}
}

// GemmR4 computes y[c*Rows + r] = sum_k W[r,k] x_c[k] for the quantized
// columns of a, split over threads by groups of four rows.
func GemmR4(w *R4, a *PackedQ8, y []float32) {
	nb := w.K / 32
	if a.NB != nb || len(y) < a.N*w.Rows {
		panic(fmt.Sprintf("kernels: GemmR4: %d x %d weight, %d columns of %d blocks, %d outputs", w.Rows, w.K, a.N, a.NB, len(y)))
	}
	if !a.prepped {
		// quads of columns first (r4q_prep), then the columns left over
		// in the one-column form (r4_prep)
		nq := a.N / 4
		q := r4Q * nb * nq
		need := q + r4X*nb*(a.N-4*nq)
		if cap(a.prep) < need {
			a.prep = make([]byte, need+64)
		}
		a.prep = a.prep[:need]
		for i := 0; i < nq; i++ {
			r4qPrep(a, 4*i, a.prep[i*r4Q*nb:(i+1)*r4Q*nb])
		}
		for c := 4 * nq; c < a.N; c++ {
			o := q + (c-4*nq)*r4X*nb
			r4Prep(a, c, a.prep[o:o+r4X*nb])
		}
		a.prepped = true
	}
	groups := w.Rows / 4
	run := func(g0, g1 int) {
		if useSIMD {
			gemmR4SIMD(w, g0, g1, a, y)
		} else {
			gemmR4Go(w, g0, g1, a, y)
		}
	}
	// about 64 KB of weights per task, in units of four groups (16
	// outputs, a cache line of each column)
	per := max(4, (1<<16)/(4*nb*Formats[w.Format].BlockBytes))
	if Serial(groups, per) {
		run(0, groups)
		return
	}
	ForRows(groups, per, 4, run)
}

// gemmR4Go is GemmR4's reference, in the order of its kernels (packed.c),
// so that the two agree bit for bit. Columns go in quads while four are
// left (gemm_r4q_vnni): each output accumulates, block after block, the
// block's exact integer dot product times (weight scale * activation
// scale) with one rounding (a fused multiply-add, fma32). The columns left
// over (gemm_r4_vnni; all of them below four, as in decode) give each row
// four lanes: lane l of a block is the exact integer dot product of the
// block's inputs 4l..4l+3 and 16+4l..16+4l+3 (the bytes one vpdpbusd lane
// takes), accumulated likewise, and the output is (l0+l1)+(l2+l3). A
// column alone keeps even and odd blocks apart and adds the two at the
// end, so that consecutive blocks do not wait on each other.
func gemmR4Go(w *R4, g0, g1 int, a *PackedQ8, y []float32) {
	nb, bb := w.K/32, Formats[w.Format].BlockBytes-2
	quads := a.N / 4 * 4
	for c := 0; c < quads; c++ {
		dx, _, _, qx := a.col(c)
		for r := 4 * g0; r < 4*g1; r++ {
			g, i := r/4, r%4
			var acc float32
			for b := 0; b < nb; b++ {
				gb := w.W[(g*nb+b)*4*bb:]
				s := float16.Frombits(w.Scales[(g*nb+b)*4+i]).Float32() * dx[b]
				var dot int32
				for j := 0; j < 16; j++ {
					lo, hi := r4Values(w.Format, gb, i, j)
					dot += lo*int32(qx[32*b+j]) + hi*int32(qx[32*b+16+j])
				}
				acc = fma32(float32(dot), s, acc)
			}
			y[c*w.Rows+r] = acc
		}
	}
	alone := a.N-quads == 1
	for c := quads; c < a.N; c++ {
		dx, _, _, qx := a.col(c)
		for r := 4 * g0; r < 4*g1; r++ {
			g, i := r/4, r%4
			var acc [2][4]float32
			for b := 0; b < nb; b++ {
				gb := w.W[(g*nb+b)*4*bb:]
				s := float16.Frombits(w.Scales[(g*nb+b)*4+i]).Float32() * dx[b]
				x := qx[32*b : 32*b+32]
				k := 0
				if alone {
					k = b & 1
				}
				for l := 0; l < 4; l++ {
					var dot int32
					for j := 4 * l; j < 4*l+4; j++ {
						lo, hi := r4Values(w.Format, gb, i, j)
						dot += lo*int32(x[j]) + hi*int32(x[16+j])
					}
					acc[k][l] = fma32(float32(dot), s, acc[k][l])
				}
			}
			t := acc[0]
			if alone {
				for l := range t {
					t[l] += acc[1][l]
				}
			}
			y[c*w.Rows+r] = (t[0] + t[1]) + (t[2] + t[3])
		}
	}
}

// r4Values returns the signed values of elements j and 16+j of row i in
// a repacked block gb (j < 16).
func r4Values(f FormatID, gb []byte, i, j int) (lo, hi int32) {
	if f == Q4_0 {
		return int32(gb[16*i+j]&15) - 8, int32(gb[16*i+j]>>4) - 8
	}
	return int32(int8(gb[16*i+j] ^ 0x80)), int32(int8(gb[64+16*i+j] ^ 0x80))
}
