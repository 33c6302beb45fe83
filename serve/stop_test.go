package serve

import "testing"

func TestStopIndex(t *testing.T) {
	for _, c := range []struct {
		text  string
		stops []string
		want  int
	}{
		{"hello world", nil, -1},
		{"hello world", []string{"xyz"}, -1},
		{"hello world", []string{"world"}, 6},
		{"hello world", []string{"world", "lo"}, 3},
		{"hello world", []string{"o"}, 4},
		{"héllo", []string{"é"}, 1},
	} {
		if got := stopIndex(c.text, c.stops); got != c.want {
			t.Errorf("stopIndex(%q, %q) = %d, want %d", c.text, c.stops, got, c.want)
		}
	}
}

func TestHeldBack(t *testing.T) {
	for _, c := range []struct {
		text  string
		stops []string
		want  int
	}{
		{"hello", nil, 0},
		{"hello", []string{"xyz"}, 0},
		{"hello w", []string{"world"}, 1},
		{"hello wor", []string{"world"}, 3},
		{"hello wor", []string{"world", "or"}, 3},
		{"hello wo", []string{"x", "o!"}, 1},
		// A full match is stopIndex's business, not held back here.
		{"hello world", []string{"world"}, 0},
		{"ab", []string{"abc", "b"}, 2},
		{"", []string{"abc"}, 0},
	} {
		if got := heldBack(c.text, c.stops); got != c.want {
			t.Errorf("heldBack(%q, %q) = %d, want %d", c.text, c.stops, got, c.want)
		}
	}
}
