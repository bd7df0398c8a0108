// Package data prepares and serves training data: text files are tokenized
// into Parquet shards (Arrow) with a manifest of counts and checksums, and a
// Loader cuts the token stream into shuffled, resumable batches. File formats
// live in sub-packages (bpe, gguf, safetensors, atomic; chat renders
// conversations).
//
// Inputs are .txt files, JSON Lines (a "text" string or a "messages" list
// of {role, content} a line) and Parquet files (a "text" column). A
// conversation is rendered with the model's chat template and stored with a
// mask that is 1 on the assistant's replies only; the Loader turns the
// other targets into IgnoreTarget, so training and evaluation count the
// replies alone, as torchtune and TRL's assistant-only loss do.
//
// Everything read from a file is bounded before it is allocated: a
// manifest's fields (ParseManifest), a Parquet file's footer (CheckFooter)
// and every page, zstd frame by frame and snappy by its decoded length
// (CheckPages); a hostile shard costs at most about MaxPageExpansion times
// its size.
package data
