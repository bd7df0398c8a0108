package export

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"qat/data/gguf"
	"qat/qat"
)

// goldenFiles are the sha256 sums of files exported from fixed models:
// the exports are byte for byte those of the commit that wrote this table
// (before the format table and tag-derived names replaced hand-written
// copies); any change to them is a change to every exported checkpoint.
var goldenFiles = map[string]string{
	"checkpoint/fp8":                         "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/fp8-tied":                    "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"checkpoint/lsq-group":                   "cf1aea30495e7a89f34b2cad92771be84fffad3c86f79070afed4be20d3d70fb",
	"checkpoint/outliers":                    "215b3e1062cb4cd9f2ccc516f0c451191f216e5d69d1242de35b692fb0d92e05",
	"checkpoint/outliers-tied":               "97d62359ca2aa2924dd4fb27211269e438caebe126136d28d2510e8a77aa338f",
	"checkpoint/q8_0":                        "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/q8_0-tied":                   "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"checkpoint/qqq-g128":                    "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/qqq-g128-tied":               "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"checkpoint/w4a16-g32":                   "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/w4a16-g32-tied":              "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"checkpoint/w4a8":                        "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/w4a8-qqq":                    "1f4f5ea11dfa445bc8646c45a0e80c8116cfed55a8df1e5021951c1f814403fd",
	"checkpoint/w4a8-qqq-tied":               "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"checkpoint/w4a8-tied":                   "efddea5dd60b6233875629dc0e0ca28fb019515fbbb646bf6451249d7b3cf583",
	"gguf/f16":                               "2eed5291fa8dab638f3859bde63b0728b0c16b5b73d53d26b21b251db0192481",
	"gguf/f32":                               "772defaf9528520f67323c57ed85da5607f1154c723dddd9379e74d60a74a74c",
	"gguf/q4_0-int":                          "97453dc0c8937b6fee4583dbfd00c92e0b03a3ad033dec30002d719f2f4877cc",
	"gguf/q4_0-qat":                          "fc3d0c20c0b3c3bd9c658c36524f9658bd18e43601ca8cf26638eb7169e374da",
	"gguf/q4_0-rtn":                          "97453dc0c8937b6fee4583dbfd00c92e0b03a3ad033dec30002d719f2f4877cc",
	"gguf/q8_0-qat":                          "4358b87ab014aa746f8c306695030b5deffad03b8e430fe7eabdcbe68ebb9d80",
	"gguf/q8_0-rtn":                          "8774916a5b080c697486db7b275be9070fec9a7d12df10e329f6ff49a4c6886a",
	"packed/fp8":                             "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have fp8_e4m3 (symmetric true)",
	"packed/fp8-tied":                        "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have fp8_e4m3 (symmetric true)",
	"packed/lsq-group/config.json":           "4a1ec88821a2837d95731e77f727573437b9ac5dcd795ffbbd24b7b25aa27332",
	"packed/lsq-group/model.safetensors":     "2e8cddb12fee1da97283c298ee6114ab18418a3b067c3cdb91160d1c2dd169b8",
	"packed/lsq-group/tokenizer.json":        "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/outliers-tied/config.json":       "64475119e6714e12a7a5d129c1945cf2cd4d436511d86e39ac380fd2267819b4",
	"packed/outliers-tied/model.safetensors": "19d1b6108e4909989f4362314fbb9e20a1638aee6ea1fa2037784c8e6193aa49",
	"packed/outliers-tied/tokenizer.json":    "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/outliers/config.json":            "e5af003d2cabe3fd46a444a3b6174e8f05e2674d082612b32968b14b84f4e342",
	"packed/outliers/model.safetensors":      "bff80481b9dcf6640c7383f3b5a592c9a0634b7d76dfc08ff5ec92305dc9483a",
	"packed/outliers/tokenizer.json":         "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/q8_0":                            "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have q8_0 (symmetric true)",
	"packed/q8_0-tied":                       "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have q8_0 (symmetric true)",
	"packed/qqq-g128-tied/config.json":       "d9720d80bb702db1a499379ca64341d9165d98018784fed7be1e319249e90579",
	"packed/qqq-g128-tied/model.safetensors": "8cd60fd7b47ec80ae706ac4fc0f0061f1d9e61e41bd1a5f93e18ad397c080692",
	"packed/qqq-g128-tied/tokenizer.json":    "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/qqq-g128/config.json":            "547892e5c6cd553e3333d8a517d56bc145b2974b272a486b8b4938628d0dc76b",
	"packed/qqq-g128/model.safetensors":      "ecb19bd14d6d9d0930343dbd5d73141cb56d3a16491eb81ea44be3c96f146e58",
	"packed/qqq-g128/tokenizer.json":         "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/w4a16-g32":                       "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have q4_0 (symmetric true)",
	"packed/w4a16-g32-tied":                  "error: export model.layers.0.self_attn.q_proj: packed int export needs a symmetric int quantizer, have q4_0 (symmetric true)",
	"packed/w4a8-qqq-tied/config.json":       "1cddf5fb989d45afaa0bebc20ef9b70e386c7b89f506eb515dd7a9acf4c7f15e",
	"packed/w4a8-qqq-tied/model.safetensors": "4c1e1a08cb8ea8fb6b43ea172628504d82fcadb46fb15fd9224ce8374dd0a5f9",
	"packed/w4a8-qqq-tied/tokenizer.json":    "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/w4a8-qqq/config.json":            "759b7d783f894f1cc46a40bcc56028e116a67d674977f3a7131ff5b28ff6bc48",
	"packed/w4a8-qqq/model.safetensors":      "a5df2516cb28ac8d12ed5cb7c276afb52c8a089fc27dc749df0fbe05ac868128",
	"packed/w4a8-qqq/tokenizer.json":         "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/w4a8-tied/config.json":           "0bc37e73ff717288ecd9cbe6fff665645fc83ee2f9d9de089886d8b30fc5db10",
	"packed/w4a8-tied/model.safetensors":     "bff4f6e924b5116c1a63cdadf41d1d19856621ed7e7e5d1f6423b813eb085dd3",
	"packed/w4a8-tied/tokenizer.json":        "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"packed/w4a8/config.json":                "8facbbbe5ddbd40190195838cd19098610ff3e871facd6ebb3e51d3d4423c69f",
	"packed/w4a8/model.safetensors":          "5507485b7d60e58d5214efee55753c4587ccc34deb40e64bc0df9a69da9f98f6",
	"packed/w4a8/tokenizer.json":             "f12c8b27753ddd7cd05f89b11d0ac383c4065beb8e47065da6a3b8c6b403b926",
	"quant.json/fp8":                         "311d86f3542b2b379ea055627d94e951212beb0610eff13b043cd1d5b037c32a",
	"quant.json/fp8-tied":                    "311d86f3542b2b379ea055627d94e951212beb0610eff13b043cd1d5b037c32a",
	"quant.json/lsq-group":                   "2c3ebf9a9732f13d3f342d375fe2749080f27544a30282f7571fba5e4af801fe",
	"quant.json/outliers":                    "40918e03a888e5901015be23229ef1529d23112c404a29a64f1e8b5169015ddb",
	"quant.json/outliers-tied":               "40918e03a888e5901015be23229ef1529d23112c404a29a64f1e8b5169015ddb",
	"quant.json/q8_0":                        "965e235fbbdb3ae21cd05928cd81e43557aac4f83f37a38f1102a0c7042f072d",
	"quant.json/q8_0-tied":                   "965e235fbbdb3ae21cd05928cd81e43557aac4f83f37a38f1102a0c7042f072d",
	"quant.json/qqq-g128":                    "c613aa0e3440967988ff95aa47161d84552c61488fa215bd4ed94606560d05e4",
	"quant.json/qqq-g128-tied":               "c613aa0e3440967988ff95aa47161d84552c61488fa215bd4ed94606560d05e4",
	"quant.json/w4a16-g32":                   "3aab9f5921708a7ed10df16f6e216a67211cce26d96800c01926acd8ace5530f",
	"quant.json/w4a16-g32-tied":              "3aab9f5921708a7ed10df16f6e216a67211cce26d96800c01926acd8ace5530f",
	"quant.json/w4a8":                        "41d155868df4169dc9fa30647a25635608d916837edbdc6b070e5ecafe65cf75",
	"quant.json/w4a8-qqq":                    "5922bb108b13debc74e5df319ad77fb02c6f2b144c330c7e9626d3f4dfcc0972",
	"quant.json/w4a8-qqq-tied":               "5922bb108b13debc74e5df319ad77fb02c6f2b144c330c7e9626d3f4dfcc0972",
	"quant.json/w4a8-tied":                   "41d155868df4169dc9fa30647a25635608d916837edbdc6b070e5ecafe65cf75",
}

// goldenRules are the quantizer rules of the golden exports, as quant.json
// spells them.
var goldenRules = map[string]string{
	"w4a16-g32": "",
	"w4a8":      "",
	"w4a8-qqq":  "",
	"qqq-g128":  `[{"match":"model.layers.*","weights":{"format":"int","bits":4,"symmetric":true,"granularity":"group","group_size":32,"scale":"minmax","two_level":true},"activations":{"format":"int","bits":8,"symmetric":true,"granularity":"token","scale":"minmax","restricted":true}}]`,
	"q8_0":      `[{"match":"model.layers.*","weights":{"format":"q8_0","symmetric":true,"granularity":"group","group_size":32,"scale":"minmax"}}]`,
	"outliers":  `[{"match":"model.layers.*","weights":{"format":"int","bits":4,"symmetric":true,"granularity":"channel","scale":"minmax","outliers":0.02}}]`,
	"lsq-group": `[{"match":"model.layers.*.mlp.*","weights":{"format":"int","bits":8,"symmetric":true,"granularity":"group","group_size":16,"scale":"lsq"}},{"match":"model.layers.*","weights":{"format":"int","bits":2,"symmetric":true,"granularity":"channel","scale":"mse"}},{"match":"lm_head","weights":{"format":"int","bits":4,"symmetric":true,"granularity":"tensor","scale":"minmax"}}]`,
	"fp8":       "",
}

func goldenRulesOf(t *testing.T, name string) []qat.Rule {
	if goldenRules[name] == "" {
		return qat.Presets[name]
	}
	var rs []qat.Rule
	if err := json.Unmarshal([]byte(goldenRules[name]), &rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

func sum(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestExportGolden: GGUF and packed safetensors exports, checkpoints and
// quant.json of fixed models are byte for byte the recorded ones.
func TestExportGolden(t *testing.T) {
	got := map[string]string{}
	dir := t.TempDir()
	for _, c := range []struct {
		name, rules, quant string
		tied               bool
	}{
		{"f32", "", "f32", false}, {"f16", "", "f16", true}, {"q4_0-rtn", "", "q4_0", false}, {"q8_0-rtn", "", "q8_0", true},
		{"q4_0-qat", "w4a16-g32", "q4_0", true}, {"q8_0-qat", "q8_0", "q8_0", false}, {"q4_0-int", "w4a8", "q4_0", false},
	} {
		m, tok := testModel(t, c.tied)
		if c.rules != "" {
			if err := qat.Prepare(m, goldenRulesOf(t, c.rules)); err != nil {
				t.Fatal(err)
			}
		}
		f, err := GGUF(m, tok, c.quant, "golden")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, c.name+".gguf")
		if err := gguf.Write(p, f); err != nil {
			t.Fatal(err)
		}
		got["gguf/"+c.name] = sum(t, p)
	}
	for _, name := range []string{"w4a8", "w4a8-qqq", "qqq-g128", "outliers", "lsq-group", "w4a16-g32", "fp8", "q8_0"} {
		for _, tied := range []bool{false, true} {
			if tied && name == "lsq-group" {
				continue // its lm_head rule needs an untied head
			}
			m, tok := testModel(t, tied)
			rules := goldenRulesOf(t, name)
			if err := qat.Prepare(m, rules); err != nil {
				t.Fatal(err)
			}
			key := name
			if tied {
				key += "-tied"
			}
			ck := filepath.Join(dir, key+".safetensors")
			if err := m.Save(ck); err != nil {
				t.Fatal(err)
			}
			got["checkpoint/"+key] = sum(t, ck)
			rj, _ := json.Marshal(rules)
			h := sha256.Sum256(rj)
			got["quant.json/"+key] = hex.EncodeToString(h[:])
			pd := filepath.Join(dir, key)
			if err := PackedSafetensors(m, tok, pd, false); err != nil {
				got["packed/"+key] = "error: " + err.Error()
				continue
			}
			for _, f := range []string{"model.safetensors", "config.json", "tokenizer.json"} {
				got["packed/"+key+"/"+f] = sum(t, filepath.Join(pd, f))
			}
		}
	}
	if len(goldenFiles) == 0 || os.Getenv("QAT_GOLDEN_PRINT") != "" {
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.Logf("%q: %q,", k, got[k])
		}
	}
	for k, want := range goldenFiles {
		if got[k] != want {
			t.Errorf("%s: sha256 %s, want %s", k, got[k], want)
		}
	}
	if len(got) != len(goldenFiles) {
		t.Errorf("%d exports, %d recorded", len(got), len(goldenFiles))
	}
}
