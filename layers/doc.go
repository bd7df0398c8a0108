// Package layers holds the Llama model: structs whose fields are layers and
// parameters, with struct tags that are the one source of its names: `st`
// names the checkpoint tensors as Hugging Face names them
// (model.layers.3.self_attn.q_proj.weight), `gguf` as llama.cpp's GGUF
// files do (blk.3.attn_q.weight), and `input` groups the linears that read
// one input (q/k/v, gate/up; InputGroups). Forward code is written against
// autograd.Ops only.
package layers
