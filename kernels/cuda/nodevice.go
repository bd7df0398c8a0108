//go:build !gpu

package cuda

// Available says whether this binary was built with the device code.
const Available = false

// Device is a GPU; without the gpu build tag there is none to open.
type Device struct {
	Name string
	Mem  int64
}

// Open fails: this build has no device code.
func Open(ordinal int) (*Device, error) { return nil, ErrNoGPUBuild }

// Close does nothing.
func (d *Device) Close() error { return nil }
