package chat

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// repo is the repository root, where tools/ and .cache/ are.
const repo = "../.."

// needNode skips without node and the npm packages (make npm-deps), unless
// QAT_REQUIRE_NODE=1 (make test sets it), which makes their absence fail.
func needNode(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(repo, ".cache/npm/node_modules/@huggingface/jinja"))
	}
	if err != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1 but node or .cache/npm (make npm-deps) is missing: %v", err)
		}
		t.Skip("node or .cache/npm missing (make npm-deps)")
	}
}

// realTemplate reads the chat template and bos/eos texts of a real model's
// tokenizer_config.json, as tools/tokref extracts them (make npm-deps).
func realTemplate(t *testing.T, name string) (src, bos, eos string) {
	t.Helper()
	dir := filepath.Join(repo, ".cache/tokref", name)
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1 but %v (make npm-deps extracts it)", err)
		}
		t.Skipf("%v (make npm-deps extracts it)", err)
	}
	var cfg struct {
		ChatTemplate string `json:"chat_template"`
		BOS          any    `json:"bos_token"`
		EOS          any    `json:"eos_token"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	str := func(v any) string {
		if s, ok := v.(string); ok {
			return s
		}
		return ""
	}
	return cfg.ChatTemplate, str(cfg.BOS), str(cfg.EOS)
}

type refCase struct {
	Template string         `json:"template"`
	Context  map[string]any `json:"context"`
}

type refOut struct {
	Text  *string `json:"text"`
	Error *string `json:"error"`
}

// torchPython is Debian's Python, where make deps installs python3-jinja2.
const torchPython = "/usr/bin/python3"

// reference renders every case in @huggingface/jinja (tools/chatref/
// chatref.mjs, the hub's engine) and in Python's jinja2 as transformers
// configures it (chatref.py, the engine models are trained with). Without
// jinja2 the Python column is nil: it skips, unless QAT_REQUIRE_TORCH=1
// (make test, whose deps install it), which fails.
func reference(t *testing.T, cases []refCase) (hf, py []refOut) {
	t.Helper()
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) []refOut {
		cmd := exec.Command(name, args...)
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
		}
		var res []refOut
		if err := json.Unmarshal(out, &res); err != nil || len(res) != len(cases) {
			t.Fatalf("%s %v: %d results for %d cases (%v)", name, args, len(res), len(cases), err)
		}
		return res
	}
	hf = run("node", filepath.Join(repo, "tools/chatref/chatref.mjs"), "render")
	if err := exec.Command(torchPython, "-c", "import jinja2").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import jinja2 (apt-get install python3-jinja2): %v", torchPython, err)
		}
		t.Skip("python3-jinja2 not installed")
	}
	py = run(torchPython, filepath.Join(repo, "tools/chatref/chatref.py"))
	return hf, py
}

// result is one render of ours.
type result struct {
	text string
	err  error
}

// compare checks our renders against Python's jinja2, byte for byte (an
// error where it raises, carrying its message), and against
// @huggingface/jinja wherever that agrees with Python; the cases where it
// does not (it prints true for True, ignores str.lstrip's argument,
// drops a loop iteration's output at break and continue) are logged.
func compare(t *testing.T, cases []refCase, got []result) {
	t.Helper()
	hf, py := reference(t, cases)
	deviations := 0
	for i, p := range py {
		g, h := got[i], hf[i]
		switch {
		case p.Error != nil && g.err == nil:
			t.Errorf("case %d (%.60q): jinja2 fails (%s), we render %q", i, cases[i].Template, *p.Error, g.text)
		case p.Error != nil:
			if !strings.Contains(g.err.Error(), *p.Error) {
				t.Errorf("case %d: our error %q does not carry the template's message %q", i, g.err, *p.Error)
			}
		case g.err != nil:
			t.Errorf("case %d (%.60q): we fail (%v), jinja2 renders %q", i, cases[i].Template, g.err, *p.Text)
		case g.text != *p.Text:
			t.Errorf("case %d (%.60q): got\n%q\njinja2:\n%q", i, cases[i].Template, g.text, *p.Text)
		}
		if (h.Error == nil) != (p.Error == nil) || (h.Text != nil && *h.Text != *p.Text) {
			deviations++
			t.Logf("case %d: @huggingface/jinja deviates from jinja2: %v / %v", i, deref(h), deref(p))
		}
	}
	t.Logf("%d cases, %d where @huggingface/jinja deviates from jinja2", len(py), deviations)
}

func deref(r refOut) string {
	if r.Error != nil {
		return "error " + *r.Error
	}
	return strconv.Quote(*r.Text)
}

// conversations covers system prompts, multi-turn, unicode, white space the
// templates trim, Qwen3's reasoning split, and a conversation ending on the
// user's turn.
var conversations = [][]Message{
	{{"system", "You are terse."}, {"user", "What is 2+2?"}, {"assistant", "4"}},
	{{"user", "Hi"}, {"assistant", "Hello! How can I help?"}, {"user", "Tell me a joke."}, {"assistant", "Why did the chicken cross the road?\nTo get to the other side."}},
	{{"user", "  Übersetze: 猫  "}, {"assistant", "\n Katze 🐈 (ネコ) — «chat» \n"}},
	{{"system", "Think first."}, {"user", "Is 91 prime?"}, {"assistant", "<think>\n91 = 7 * 13\n</think>\n\nNo: 91 = 7 × 13."}, {"user", "And 97?"}, {"assistant", "Yes."}},
	{{"user", "Only a question?"}},
	{{"user", "Empty reply:"}, {"assistant", ""}, {"user", "ok"}, {"assistant", "done"}},
}

func msgContext(msgs []Message, gen bool, bos, eos string) map[string]any {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	return map[string]any{"messages": list, "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
}

// TestRealTemplatesRender renders every conversation with the
// Llama 3 and Qwen3 templates, with and without the generation prompt, and
// compares the text byte for byte with jinja2 and @huggingface/jinja.
func TestRealTemplatesRender(t *testing.T) {
	needNode(t)
	var cases []refCase
	var got []result
	for _, name := range []string{"llama3", "qwen3"} {
		src, bos, eos := realTemplate(t, name)
		tmpl, err := Compile(src, bos, eos)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range conversations {
			for _, gen := range []bool{false, true} {
				s, err := tmpl.Render(c, gen)
				got = append(got, result{s, err})
				cases = append(cases, refCase{src, msgContext(c, gen, bos, eos)})
			}
		}
	}
	compare(t, cases, got)
}

// constructs exercises what chat templates use beyond the two real ones:
// raise_exception, loop controls and variables, namespace, tojson, slicing,
// string methods, tests and filters; each renders in both engines (or
// fails in both).
var constructs = []string{
	`{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ m.role }}]{% endfor %}`,
	`{% for m in messages %}{% if loop.first %}<first>{% endif %}{{ loop.index }}/{{ loop.length }}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.content }}{% if loop.index > 3 %}{% break %}{% endif %}{% if not loop.last %},{% endif %}{% endfor %}`,
	`{{ messages | tojson }}|{{ {"a": 1, "b": [true, none, 2.5, "x\"y"]} | tojson }}|{{ "é🐈" | tojson }}`,
	`{% set ns = namespace(n=0, last='') %}{% for m in messages[::-1] %}{% set ns.n = ns.n + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.n }} {{ ns.last }} {{ messages[1:] | length }} {{ messages[-1].role }}`,
	`{% for m in messages %}{{ m.content.strip() }}|{{ m.content.lstrip('\n') }}|{{ m.content.rstrip() }}|{{ m.content.split(' ')[0] }}|{{ m.content.startswith('Hi') }}|{{ m.content.endswith('?') }}|{{ m.content.upper() }}|{{ m.content.replace('a', 'A') }}|{{ m.content | trim }}|{{ m.role | capitalize }}
{% endfor %}`,
	`{%- if messages[0]['role'] == 'system' -%}{%- set sys = messages[0]['content'] -%}{%- set rest = messages[1:] -%}{%- else -%}{%- set sys = 'default' -%}{%- set rest = messages -%}{%- endif -%}
<<{{ sys }}>>{% for m in rest %}{{ m.role ~ ':' ~ m.content }}{% if m.reasoning is defined %}R{% endif %}{{ '\n' }}{% endfor %}{{ 'ok' if add_generation_prompt else 'no' }} {{ '</think>' in messages[-1].content }}`,
	`{{ raise_exception('always') }}`,
	"{% for m in messages %}\n  {% if m.role == 'user' %}\n    U: {{ m.content }}\n  {% else %}\n    {{ m.role }}\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}\nA:\n{% endif %}",
}

func TestConstructsRender(t *testing.T) {
	needNode(t)
	var cases []refCase
	var got []result
	for _, src := range constructs {
		tmpl, err := Compile(src, "<s>", "</s>")
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		for _, c := range conversations {
			s, err := tmpl.Render(c, true)
			got = append(got, result{s, err})
			cases = append(cases, refCase{src, msgContext(c, true, "<s>", "</s>")})
		}
	}
	compare(t, cases, got)
}

// FuzzTemplate: any template source compiles or is an error, and renders
// a conversation or is an error, never a panic.
func FuzzTemplate(f *testing.F) {
	for _, c := range constructs {
		f.Add(c)
	}
	f.Add(`{% for m in messages %}{{ m.content[::-1] | tojson }}{% endfor %}`)
	f.Add(`{{ messages[0].content.split()[5] }}{% set x = namespace() %}{{ x.y.z }}`)
	f.Fuzz(func(t *testing.T, src string) {
		if strings.Contains(src, "range") { // a template's loops are bounded by its author, not here
			return
		}
		tmpl, err := Compile(src, "<s>", "</s>")
		if err != nil {
			return
		}
		if _, _, err := tmpl.Spans(conversations[1], []string{"</s>"}); err != nil {
			return
		}
	})
}
