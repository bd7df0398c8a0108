package bpe

import (
	"unicode"
	"unicode/utf8"
)

// Pretokenize splits s the way GPT-2's pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// does (leftmost alternative wins, as in a backtracking regex engine),
// calling emit for each piece in order. It is written out by hand because a
// backtracking regex is several times slower on a corpus; the tests compare
// it with the regex itself (regexp2). Bytes that are not valid UTF-8 count
// as neither space, letter nor number.
func Pretokenize(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		n := pieceLen(s, i)
		emit(s[i : i+n])
		i += n
	}
}

type class uint8

const (
	clsOther class = iota
	clsSpace
	clsLetter
	clsNumber
)

func classAt(s string, i int) (class, int) {
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size <= 1 {
		return clsOther, 1
	}
	switch {
	case unicode.IsSpace(r):
		return clsSpace, size
	case unicode.IsLetter(r):
		return clsLetter, size
	case unicode.IsNumber(r):
		return clsNumber, size
	}
	return clsOther, size
}

// run returns the end of the run of class c starting at i.
func run(s string, i int, c class) int {
	for i < len(s) {
		k, size := classAt(s, i)
		if k != c {
			break
		}
		i += size
	}
	return i
}

func pieceLen(s string, i int) int {
	// 's 't 're 've 'm 'll 'd
	if s[i] == '\'' && i+1 < len(s) {
		switch s[i+1] {
		case 's', 't', 'm', 'd':
			return 2
		case 'r', 'v':
			if i+2 < len(s) && s[i+2] == 'e' {
				return 3
			}
		case 'l':
			if i+2 < len(s) && s[i+2] == 'l' {
				return 3
			}
		}
	}
	// " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional space,
	// then a run of one class other than space.
	if s[i] == ' ' && i+1 < len(s) {
		if c, _ := classAt(s, i+1); c != clsSpace {
			return run(s, i+1, c) - i
		}
	} else if c, _ := classAt(s, i); c != clsSpace {
		return run(s, i, c) - i
	}
	// \s+(?!\S) then \s+: a whitespace run; when a non-space follows it,
	// its last character is left to start the next piece (so " word" keeps
	// its space), unless the run is that one character.
	end := run(s, i, clsSpace)
	if end == len(s) {
		return end - i
	}
	_, last := lastRune(s[i:end])
	if end-last > i {
		return end - last - i
	}
	return end - i
}

func lastRune(s string) (rune, int) { return utf8.DecodeLastRuneInString(s) }
