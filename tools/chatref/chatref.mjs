// chatref: the JavaScript reference for data/chat's tests.
//
//   node tools/chatref/chatref.mjs render < cases.json > out.json
//     for each case {template, context} of the JSON array on stdin, renders
//     template with context in @huggingface/jinja (the Jinja implementation
//     transformers.js and the Hugging Face hub use for chat templates) and
//     prints the array of results: {text} or {error} when rendering throws
//     (raise_exception, a syntax error).
//
//   node tools/chatref/chatref.mjs encode DIR < texts.json > ids.json
//     tokenizes each string of the JSON array on stdin with the tokenizer of
//     DIR (tokenizer.json, tokenizer_config.json) in @lenml/tokenizers (a
//     port of transformers.js's tokenizers, independent of the
//     @huggingface/tokenizers port data/bpe's tests use), adding no special
//     tokens, and prints the array of id arrays.
//
//   node tools/chatref/chatref.mjs template DIR
//     prints DIR/tokenizer_config.json's chat_template (a string, or the
//     "default" entry of a list of named templates), as JSON.
//
// The node_modules folder is QAT_NODE_MODULES, or .cache/npm/node_modules of
// the repository (where `make npm-deps` installs it). One process serves
// every case, so node starts once per test.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const nm = process.env.QAT_NODE_MODULES || path.join(here, "..", "..", ".cache", "npm", "node_modules");

function die(msg) {
  process.stderr.write("chatref: " + msg + "\n");
  process.exit(2);
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === "render") {
  const { Template } = await import(pathToFileURL(path.join(nm, "@huggingface", "jinja", "dist", "index.js")).href);
  const cases = JSON.parse(fs.readFileSync(0, "utf8"));
  const out = [];
  for (const c of cases) {
    try {
      out.push({ text: new Template(c.template).render(c.context) });
    } catch (e) {
      out.push({ error: String(e && e.message ? e.message : e) });
    }
  }
  process.stdout.write(JSON.stringify(out));
} else if (cmd === "encode") {
  if (!arg) die("encode DIR");
  const { TokenizerLoader } = await import(pathToFileURL(path.join(nm, "@lenml", "tokenizers", "dist", "main.mjs")).href);
  const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(arg, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(arg, "tokenizer_config.json"), "utf8")),
  });
  const texts = JSON.parse(fs.readFileSync(0, "utf8"));
  process.stdout.write(JSON.stringify(texts.map((t) => Array.from(tok.encode(t, { add_special_tokens: false })))));
} else if (cmd === "template") {
  if (!arg) die("template DIR");
  const cfg = JSON.parse(fs.readFileSync(path.join(arg, "tokenizer_config.json"), "utf8"));
  let t = cfg.chat_template;
  if (Array.isArray(t)) t = (t.find((x) => x.name === "default") || {}).template;
  if (typeof t !== "string") die(arg + ": no chat_template");
  process.stdout.write(JSON.stringify(t));
} else {
  die("usage: chatref.mjs render < cases.json | encode DIR < texts.json | template DIR");
}
