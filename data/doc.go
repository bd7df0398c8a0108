// Package data holds qat's data pipeline; file formats live in
// sub-packages (safetensors) that import only the standard library.
package data
