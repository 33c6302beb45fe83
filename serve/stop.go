package serve

import "strings"

// stopIndex returns the byte index of the earliest occurrence of any of the
// stop strings in text, or -1.
func stopIndex(text string, stops []string) int {
	best := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// heldBack returns the length of the longest suffix of text that is a
// proper prefix of a stop string: text that may still turn into a stop
// string and so must not be sent yet.
func heldBack(text string, stops []string) int {
	longest := 0
	for _, s := range stops {
		for k := min(len(s)-1, len(text)); k > longest; k-- {
			if strings.HasSuffix(text, s[:k]) {
				longest = k
				break
			}
		}
	}
	return longest
}
