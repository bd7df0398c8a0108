// Package data prepares and serves training data: text files are tokenized
// into Parquet shards (Arrow) with a manifest of counts and checksums, and a
// Loader cuts the token stream into shuffled, resumable batches. File formats
// live in sub-packages (bpe, safetensors, atomic).
package data
