package layers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestNamesFromTags: the names the tags give are Hugging Face's and
// llama.cpp's, the input groups are q/k/v and gate/up with the other
// linears alone, and a described model has New's names and shapes.
func TestNamesFromTags(t *testing.T) {
	c := Config{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 48, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8}
	m := New(c)
	var lins []string
	for _, nl := range m.Linears() {
		lins = append(lins, nl.Name+"="+nl.GGUF)
	}
	var want []string
	for i := 0; i < c.Layers; i++ {
		for _, p := range [][2]string{{"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
			{"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}} {
			want = append(want, fmt.Sprintf("model.layers.%d.%s=blk.%d.%s", i, p[0], i, p[1]))
		}
	}
	want = append(want, "lm_head=output")
	if strings.Join(lins, " ") != strings.Join(want, " ") {
		t.Errorf("linears\n%v, want\n%v", lins, want)
	}

	var groups []string
	for _, g := range m.InputGroups() {
		groups = append(groups, fmt.Sprintf("%s/%d/%d", g.Name, g.Layer, len(g.Linears)))
	}
	want = nil
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		want = append(want, fmt.Sprintf("%sself_attn.qkv/%d/3", p, i), fmt.Sprintf("%sself_attn.o_proj/%d/1", p, i),
			fmt.Sprintf("%smlp.gate_up/%d/2", p, i), fmt.Sprintf("%smlp.down_proj/%d/1", p, i))
	}
	want = append(want, "lm_head/-1/1")
	if strings.Join(groups, " ") != strings.Join(want, " ") {
		t.Errorf("input groups\n%v, want\n%v", groups, want)
	}
	L := m.Layers[1]
	if g := m.InputGroups()[4]; g.Linears[0] != L.Attn.Q || g.Linears[1] != L.Attn.K || g.Linears[2] != L.Attn.V {
		t.Errorf("group %s holds the wrong linears", g.Name)
	}

	var gg []string
	for _, p := range m.Params() {
		gg = append(gg, p.GGUF)
	}
	if got := strings.Join(gg[:3], " ") + " ... " + strings.Join(gg[len(gg)-2:], " "); got != "token_embd.weight blk.0.attn_norm.weight blk.0.attn_q.weight ... output_norm.weight output.weight" {
		t.Errorf("GGUF names %s", got)
	}
	var attns []string
	for _, a := range m.Attentions() {
		attns = append(attns, a.Name)
	}
	if got := strings.Join(attns, " "); got != "model.layers.0.self_attn model.layers.1.self_attn" {
		t.Errorf("attentions %s", got)
	}

	d := Describe(c)
	dp, mp := d.Params(), m.Params()
	if len(dp) != len(mp) {
		t.Fatalf("Describe: %d parameters, New %d", len(dp), len(mp))
	}
	for i := range dp {
		if dp[i].Name != mp[i].Name || dp[i].GGUF != mp[i].GGUF || !slices.Equal(dp[i].Var.Shape(), mp[i].Var.Shape()) || dp[i].Var.Data() != nil {
			t.Errorf("parameter %d: described %s %s %v, New %s %s %v", i, dp[i].Name, dp[i].GGUF, dp[i].Var.Shape(), mp[i].Name, mp[i].GGUF, mp[i].Var.Shape())
		}
	}
}
