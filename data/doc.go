// Package data prepares and serves training data: text files are tokenized
// into Parquet shards (Arrow) with a manifest of counts and checksums, and a
// Loader cuts the token stream into shuffled, resumable batches. File formats
// live in sub-packages (bpe, gguf, safetensors, atomic).
//
// Everything read from a file is bounded before it is allocated: a
// manifest's fields (ParseManifest), a Parquet file's footer (CheckFooter)
// and every page, zstd frame by frame and snappy by its decoded length
// (CheckPages); a hostile shard costs at most about MaxPageExpansion times
// its size.
package data
