package checkpoint

import "qat/layers"

// LoadWeights reads the weights of a model directory (a checkpoint, or a
// Hugging Face directory: model.safetensors or sharded, F32/F16/BF16) into
// m, whose config the caller took from the directory's config.json
// (HFConfig): a fine-tune's init_from. The tensors are checked against m
// before any value is read and converted straight from the mapped files
// into m's parameters, so the weights are never held twice. Quantizer
// state a float checkpoint lacks keeps its initial value (Model.LoadFrom).
func LoadWeights(dir string, m *layers.Model) error {
	f, path, err := openWeights(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return m.LoadFrom(path, f)
}
