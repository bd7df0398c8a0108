//go:build gpu

package cuda

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"
)

// Available says whether this binary was built with the device code.
const Available = true

// Device is one GPU with kernels.ptx loaded. A CUDA context is current on
// one OS thread at a time while goroutines move between threads, so every
// method pins its goroutine and makes the context current first; a Device
// is for one goroutine at a time.
type Device struct {
	// Name is the GPU's name; Mem its memory in bytes.
	Name string
	Mem  int64
	ctx  cu.CUContext
	mod  cu.Module
	fn   map[string]cu.Function
}

// cuErr names the driver call that failed.
func cuErr(call string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cuda: %s: %w", call, err)
}

// Open makes a context on GPU ordinal and loads the kernels (the driver
// JIT-compiles the PTX for the GPU, once).
func Open(ordinal int) (*Device, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n, err := cu.NumDevices()
	if err != nil {
		return nil, cuErr("cuDeviceGetCount", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: device %d: this machine has %d GPUs", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, cuErr("cuDeviceGet", err)
	}
	d := &Device{fn: map[string]cu.Function{}}
	if d.Name, err = dev.Name(); err != nil {
		return nil, cuErr("cuDeviceGetName", err)
	}
	if d.Mem, err = dev.TotalMem(); err != nil {
		return nil, cuErr("cuDeviceTotalMem", err)
	}
	if d.ctx, err = dev.MakeContext(cu.SchedAuto); err != nil {
		return nil, cuErr("cuCtxCreate", err)
	}
	if d.mod, err = cu.LoadData(PTX); err != nil {
		return nil, cuErr("cuModuleLoadData (kernels.ptx)", err)
	}
	for _, k := range Kernels {
		f, err := d.mod.Function(k)
		if err != nil {
			return nil, cuErr("cuModuleGetFunction "+k, err)
		}
		d.fn[k] = f
	}
	return d, nil
}

// on runs the driver call f with d's context current: it pins the calling
// goroutine to its thread for the call, and names call in f's error.
func (d *Device) on(call string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return cuErr("cuCtxSetCurrent", err)
	}
	return cuErr(call, f())
}

// Close unloads the kernels and destroys the context.
func (d *Device) Close() error {
	if err := d.on("cuModuleUnload", d.mod.Unload); err != nil {
		return err
	}
	return d.on("cuCtxDestroy", d.ctx.Destroy)
}

// Sync waits for every launched kernel to finish and returns the first
// error a kernel raised.
func (d *Device) Sync() error { return d.on("cuCtxSynchronize", cu.Synchronize) }

// Buffer is device memory. The zero Buffer is a null pointer (the optional
// arguments of some kernels).
type Buffer struct {
	Ptr   cu.DevicePtr
	Bytes int64
}

// Alloc allocates bytes of device memory.
func (d *Device) Alloc(bytes int64) (Buffer, error) {
	var p cu.DevicePtr
	err := d.on(fmt.Sprintf("cuMemAlloc(%d)", bytes), func() (err error) {
		p, err = cu.MemAlloc(max(bytes, 1))
		return err
	})
	if err != nil {
		return Buffer{}, err
	}
	return Buffer{p, bytes}, nil
}

// Free releases b.
func (d *Device) Free(b Buffer) error {
	if b.Ptr == 0 {
		return nil
	}
	return d.on("cuMemFree", func() error { return cu.MemFree(b.Ptr) })
}

// Upload copies src into a new buffer.
func Upload[T any](d *Device, src []T) (Buffer, error) {
	var z T
	b, err := d.Alloc(int64(len(src)) * int64(unsafe.Sizeof(z)))
	if err != nil {
		return b, err
	}
	return b, transfer(d, src, b, true)
}

// Download copies the start of b into dst.
func Download[T any](d *Device, dst []T, b Buffer) error { return transfer(d, dst, b, false) }

// write copies src to the start of an existing buffer.
func write[T any](d *Device, dst Buffer, src []T) error { return transfer(d, src, dst, true) }

// transfer copies host to the start of b (toDevice) or back.
func transfer[T any](d *Device, host []T, b Buffer, toDevice bool) error {
	var z T
	n := int64(len(host)) * int64(unsafe.Sizeof(z))
	if n > b.Bytes {
		return fmt.Errorf("cuda: copy of %d bytes with a buffer of %d", n, b.Bytes)
	}
	if n == 0 {
		return nil
	}
	if toDevice {
		return d.on("cuMemcpyHtoD", func() error { return cu.MemcpyHtoD(b.Ptr, unsafe.Pointer(&host[0]), n) })
	}
	return d.on("cuMemcpyDtoH", func() error { return cu.MemcpyDtoH(unsafe.Pointer(&host[0]), b.Ptr, n) })
}

// launch runs kernel name on grid x block threads with shared bytes of
// dynamic shared memory. Arguments are Buffers (device pointers), int
// (passed as a 64-bit long), int32 and float32, in the kernel's order.
// gorgonia.org/cu copies 8 bytes from each argument's address, so every
// argument gets an 8-byte slot.
func (d *Device) launch(name string, grid, block, shared int, args ...any) error {
	return d.launchGrid(name, grid, 1, block, shared, args...)
}

// launchGrid is launch on a grid of gx x gy blocks.
func (d *Device) launchGrid(name string, gx, gy, block, shared int, args ...any) error {
	f, ok := d.fn[name]
	if !ok {
		return fmt.Errorf("cuda: no kernel %s in kernels.ptx", name)
	}
	slots := make([]uint64, len(args))
	params := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case Buffer:
			slots[i] = uint64(v.Ptr)
		case int:
			slots[i] = uint64(int64(v))
		case int32:
			slots[i] = uint64(uint32(v))
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		default:
			return fmt.Errorf("cuda: %s: argument %d of type %T", name, i, a)
		}
		params[i] = unsafe.Pointer(&slots[i])
	}
	if gx < 1 || gy < 1 {
		return nil // nothing to do
	}
	err := d.on("cuLaunchKernel "+name, func() error {
		return f.Launch(gx, gy, 1, block, 1, 1, shared, cu.Stream{}, params)
	})
	runtime.KeepAlive(slots)
	return err
}
