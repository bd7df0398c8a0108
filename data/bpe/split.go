package bpe

// fastSplit returns a hand-written matcher equal to a known Split regex
// (tested against regexp2 on the corpus and fuzzed), or nil.
func fastSplit(re string) func(s string) [][2]int {
	return nil
}
