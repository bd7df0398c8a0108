package autograd

// Release zeroes v's value and gives its memory back to the operating
// system where it can (whole pages inside the value): for a frozen weight
// that has been converted into another form (LR-QAT keeps int8 codes in
// its place), so its float32 copy no longer counts in the process's
// memory. v reads as zeros afterwards.
func Release(v *Var) {
	clear(v.x)
	releasePages(v.x)
}
