// Package layers holds the Llama model: structs whose fields are layers and
// parameters, with `st` tags naming the checkpoint tensors as Hugging Face
// names them (model.layers.3.self_attn.q_proj.weight). Forward code is
// written against autograd.Ops only.
package layers
