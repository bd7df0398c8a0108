// Package cuda runs the quantization kernels of package kernels on NVIDIA
// GPUs through the CUDA driver API (gorgonia.org/cu): fake quantization
// (integer grids per tensor, channel, group or token; LSQ forward and
// backward; llama.cpp's Q4_0 and Q8_0 grids), the straight-through
// backward, the fused 8-bit AdamW update, and the packed Q4_0/Q8_0 x Q8_0
// products of inference (dp4a).
//
// The device code is kernels.cu compiled to PTX (kernels.ptx, `make ptx`,
// checked in): the driver JIT-compiles it for the GPU it finds, so the
// binary links only libcuda.so.1, whose API is stable across CUDA
// versions. The arithmetic of every kernel is in quant.h, which this
// package also compiles for the host (host.go): tests that run on every
// machine compare that host build bit for bit with package kernels, and
// the GPU tests compare the device with both.
//
// Build tags. The device side (device.go, ops.go) needs the tag gpu:
// gorgonia.org/cu calls cuInit when the program starts and exits when
// there is no GPU, so the default build must not import it. Without the
// tag, Open returns ErrNoGPUBuild and `qat ... --device cuda` says so. The
// tag is not named cuda because under that tag gorgonia.org/gorgonia
// switches on its own CUDA engine, which needs cuDNN.
package cuda
