package train

// deviceStep computes a batch's loss and adds the gradients into the
// model's, on a GPU (layers/device's step; train.device cuda).
type deviceStep interface {
	LossBackward(ids, targets []int32) (float32, error)
}
