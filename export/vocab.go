package export

import (
	"fmt"

	"qat/data/bpe"
	"qat/data/gguf"
)

// GGUF keys of the vocabulary, as llama.cpp's gguf-py names them.
const (
	keyTokModel    = "tokenizer.ggml.model"
	keyTokPre      = "tokenizer.ggml.pre"
	keyTokens      = "tokenizer.ggml.tokens"
	keyTokTypes    = "tokenizer.ggml.token_type"
	keyTokScores   = "tokenizer.ggml.scores"
	keyTokMerges   = "tokenizer.ggml.merges"
	keyBOS         = "tokenizer.ggml.bos_token_id"
	keyEOS         = "tokenizer.ggml.eos_token_id"
	keyEOT         = "tokenizer.ggml.eot_token_id"
	keyUNK         = "tokenizer.ggml.unknown_token_id"
	keyPAD         = "tokenizer.ggml.padding_token_id"
	keyAddBOS      = "tokenizer.ggml.add_bos_token"
	keyAddEOS      = "tokenizer.ggml.add_eos_token"
	keySpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyChat        = "tokenizer.chat_template"
	keyHFJSON      = "tokenizer.huggingface.json"
)

// vocabKVs are tok's tokenizer.* keys: llama.cpp's vocabulary
// (bpe.GGUFVocab), and for an imported tokenizer its tokenizer.json as
// tokenizer.huggingface.json (a key of the GGUF specification), so that
// reading the file back gives the very tokenizer.
func vocabKVs(tok *bpe.Tokenizer) ([]gguf.KV, error) {
	v, err := tok.GGUFVocab()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	str := func(k, s string) gguf.KV { return gguf.KV{Key: k, Type: gguf.TypeString, Value: s} }
	kvs := []gguf.KV{
		str(keyTokModel, v.Model),
		str(keyTokPre, v.Pre),
		{Key: keyTokens, Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeString, Values: v.Tokens}},
		{Key: keyTokTypes, Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeI32, Values: v.Types}},
	}
	if v.Scores != nil {
		kvs = append(kvs, gguf.KV{Key: keyTokScores, Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeF32, Values: v.Scores}})
	}
	// llama.cpp reads merges for gpt2 vocabularies only; a llama one
	// carries them too, so that qat reads back the exact merges.
	if len(v.Merges) > 0 {
		kvs = append(kvs, gguf.KV{Key: keyTokMerges, Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeString, Values: v.Merges}})
	}
	for _, id := range []struct {
		key string
		id  int32
	}{{keyBOS, v.BOS}, {keyEOS, v.EOS}, {keyEOT, v.EOT}, {keyUNK, v.UNK}, {keyPAD, v.PAD}} {
		if id.id >= 0 {
			kvs = append(kvs, gguf.KV{Key: id.key, Type: gguf.TypeU32, Value: uint32(id.id)})
		}
	}
	kvs = append(kvs, gguf.KV{Key: keyAddBOS, Type: gguf.TypeBool, Value: v.AddBOS})
	if v.AddEOS {
		kvs = append(kvs, gguf.KV{Key: keyAddEOS, Type: gguf.TypeBool, Value: true})
	}
	if v.Model == "llama" {
		kvs = append(kvs, gguf.KV{Key: keySpacePrefix, Type: gguf.TypeBool, Value: v.AddSpacePrefix})
	}
	if v.ChatTemplate != "" {
		kvs = append(kvs, str(keyChat, v.ChatTemplate))
	}
	if len(v.HFJSON) > 0 {
		kvs = append(kvs, str(keyHFJSON, string(v.HFJSON)))
	}
	return kvs, nil
}

// vocabOf rebuilds the tokenizer of f's tokenizer.* keys; with hfJSON
// false it ignores tokenizer.huggingface.json and assembles the tokenizer
// from llama.cpp's keys alone (what a GGUF from llama.cpp's converter
// has).
func vocabOf(f *gguf.File, hfJSON bool) (*bpe.Tokenizer, error) {
	v := &bpe.Vocab{BOS: -1, EOS: -1, PAD: -1, UNK: -1, EOT: -1}
	var err error
	if v.Model, err = f.String(keyTokModel); err != nil {
		return nil, err
	}
	if _, ok := f.Get(keyTokPre); ok {
		if v.Pre, err = f.String(keyTokPre); err != nil {
			return nil, err
		}
	}
	arr := func(key string, required bool, dst any) error {
		kv, ok := f.Get(key)
		if !ok {
			if required {
				return fmt.Errorf("%s missing", key)
			}
			return nil
		}
		a, isArr := kv.Value.(gguf.Array)
		if !isArr {
			return fmt.Errorf("%s is not an array", key)
		}
		switch d := dst.(type) {
		case *[]string:
			vs, ok := a.Values.([]string)
			if !ok {
				return fmt.Errorf("%s is not an array of strings", key)
			}
			*d = vs
		case *[]int32:
			vs, ok := a.Values.([]int32)
			if !ok {
				return fmt.Errorf("%s is not an array of i32", key)
			}
			*d = vs
		case *[]float32:
			vs, ok := a.Values.([]float32)
			if !ok {
				return fmt.Errorf("%s is not an array of f32", key)
			}
			*d = vs
		}
		return nil
	}
	if err := arr(keyTokens, true, &v.Tokens); err != nil {
		return nil, err
	}
	if err := arr(keyTokTypes, false, &v.Types); err != nil {
		return nil, err
	}
	if err := arr(keyTokScores, false, &v.Scores); err != nil {
		return nil, err
	}
	if err := arr(keyTokMerges, v.Model == "gpt2", &v.Merges); err != nil {
		return nil, err
	}
	for _, id := range []struct {
		key string
		dst *int32
	}{{keyBOS, &v.BOS}, {keyEOS, &v.EOS}, {keyEOT, &v.EOT}, {keyUNK, &v.UNK}, {keyPAD, &v.PAD}} {
		if _, ok := f.Get(id.key); !ok {
			continue
		}
		x, err := f.U32(id.key)
		if err != nil {
			return nil, err
		}
		if int64(x) >= int64(len(v.Tokens)) {
			return nil, fmt.Errorf("%s %d outside the %d tokens", id.key, x, len(v.Tokens))
		}
		*id.dst = int32(x)
	}
	flag := func(key string, dst *bool, def bool) error {
		*dst = def
		kv, ok := f.Get(key)
		if !ok {
			return nil
		}
		b, isBool := kv.Value.(bool)
		if !isBool {
			return fmt.Errorf("%s is not a bool", key)
		}
		*dst = b
		return nil
	}
	// llama.cpp's defaults: a llama (SentencePiece) vocabulary adds BOS and
	// a space prefix unless told otherwise
	if err := flag(keyAddBOS, &v.AddBOS, v.Model == "llama"); err != nil {
		return nil, err
	}
	if err := flag(keyAddEOS, &v.AddEOS, false); err != nil {
		return nil, err
	}
	if err := flag(keySpacePrefix, &v.AddSpacePrefix, v.Model == "llama"); err != nil {
		return nil, err
	}
	if _, ok := f.Get(keyChat); ok {
		if v.ChatTemplate, err = f.String(keyChat); err != nil {
			return nil, err
		}
	}
	if _, ok := f.Get(keyHFJSON); ok && hfJSON {
		s, err := f.String(keyHFJSON)
		if err != nil {
			return nil, err
		}
		v.HFJSON = []byte(s)
	}
	tok, err := bpe.FromGGUFVocab(v)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return tok, nil
}
