package tasks

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/prompt"
)

func loadModel(t *testing.T) (*bridge.Model, *dataset.Encoder) {
	t.Helper()
	m := testmodels.Load(t, testmodels.StoriesQ8)
	enc, err := dataset.NewEncoder(m, "")
	if err != nil {
		t.Fatal(err)
	}
	if enc.Template() != prompt.DefaultTemplate {
		t.Fatalf("template %q, want the default", enc.Template())
	}
	return m, enc
}

func TestSentimentCorrect(t *testing.T) {
	for _, c := range []struct {
		resp, label string
		want        bool
	}{
		{" positive", "positive", true},
		{"Positive.", "positive", true},
		{"\n negative! It was bad", "negative", true},
		{"negative", " Negative ", true},
		{"positive", "negative", false},
		{"not positive", "positive", false},
		{"positively", "positive", false},
		{"", "positive", false},
		{"...", "", false},
	} {
		if got := SentimentCorrect(c.resp, c.label); got != c.want {
			t.Errorf("SentimentCorrect(%q, %q) = %v, want %v", c.resp, c.label, got, c.want)
		}
	}
}

func TestCleanReview(t *testing.T) {
	in := "Great film!<br /><br />I <i>loved</i> it &amp; the cast\u0085 \u0093Wow\u0094 \u2013 <3 <grin> <BR>end\u0096really  "
	want := `Great film! I loved it & the cast... "Wow" - <3 <grin> end-really`
	if got := CleanReview(in); got != want {
		t.Fatalf("CleanReview:\n got %q\nwant %q", got, want)
	}
}

func TestReadIMDB(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprintf("r%d.json", len(s)))
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := ReadIMDB(write(`[{"t":"Good.","s":1},{"t":"Bad.","s":0}]`))
	if err != nil || !reflect.DeepEqual(got, []Review{{"Good.", true}, {"Bad.", false}}) {
		t.Fatalf("ReadIMDB = %v, %v", got, err)
	}
	for _, c := range []struct{ text, want string }{
		{`{"t":"x"}`, "want a JSON array"},
		{`[{"t":"a","s":1},{"t":"b","s":2}]`, `review 1: label "s" is 2`},
		{`[{"t":"a"}]`, `review 0: label "s" is missing`},
		{`[{"s":1}]`, `review 0: no text`},
		{`[{"t":5,"s":1}]`, `review 0:`},
	} {
		if _, err := ReadIMDB(write(c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadIMDB(%s): %v, want an error with %q", c.text, err, c.want)
		}
	}
}

func TestFitReview(t *testing.T) {
	m, enc := loadModel(t)
	long := CleanReview(strings.Repeat("This film was a long, slow <br />and rather boring affair, full of clichés. ", 40))
	const maxLen = 200
	size := func(text, label string) int {
		ex, err := enc.Example([]bridge.ChatMessage{{Role: "user", Content: SentimentInstruction(text)}}, label)
		if err != nil {
			t.Fatal(err)
		}
		return 4 + len(ex.Instruction) + len(ex.Response)
	}
	text, cut, err := FitReview(enc, long, Negative, 4, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	if !cut || !strings.HasSuffix(text, "...") || !strings.HasPrefix(long, strings.TrimSuffix(text, "...")) {
		t.Fatalf("cut %v, text %q", cut, text)
	}
	if n := size(text, Negative); n > maxLen || n < maxLen-10 {
		t.Fatalf("cut review takes %d tokens, want at most %d and not much less", n, maxLen)
	}
	// One more word would not fit: the cut is the longest.
	k := len(strings.Fields(text))
	longer := strings.Join(strings.Fields(long)[:k+1], " ") + "..."
	if n := size(longer, Negative); n <= maxLen {
		t.Fatalf("a cut one word longer takes %d tokens and fits %d", n, maxLen)
	}
	short := "A fine film."
	if text, cut, err := FitReview(enc, short, Positive, 4, maxLen); err != nil || cut || text != short {
		t.Fatalf("short review: %q %v %v", text, cut, err)
	}
	if _, _, err := FitReview(enc, long, Positive, 4, 20); err == nil || !strings.Contains(err.Error(), "budget of 20") {
		t.Fatalf("budget below the template's size: %v", err)
	}
	// The response is one token plus EOS.
	ex, _ := enc.Example([]bridge.ChatMessage{{Role: "user", Content: "x"}}, Positive)
	if len(ex.Response) != 2 || ex.Response[1] != m.Info().EOS {
		t.Fatalf("response tokens %v", ex.Response)
	}
}

func TestBuildIMDB(t *testing.T) {
	_, enc := loadModel(t)
	var reviews []Review
	for i := 0; i < 40; i++ {
		text := fmt.Sprintf("Review number %d. ", i) + strings.Repeat("It was quite something to watch. ", i%3*40)
		reviews = append(reviews, Review{Text: text, Positive: i%2 == 0})
	}
	reviews = append(reviews, Review{Text: "<br />", Positive: true}, Review{Text: reviews[0].Text, Positive: true})
	o := IMDBOptions{Train: 16, Eval: 8, Seed: 1, SoftTokens: 4, MaxLen: 200}
	train, eval, rep, err := BuildIMDB(enc, reviews, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reviews != 42 || rep.Empty != 1 || rep.Duplicates != 1 || rep.Truncated == 0 {
		t.Fatalf("report %+v", rep)
	}
	count := func(rows []dataset.Row) (pos int) {
		for _, r := range rows {
			if r.Response == Positive {
				pos++
			}
		}
		return pos
	}
	if len(train) != 16 || len(eval) != 8 || count(train) != 8 || count(eval) != 4 {
		t.Fatalf("%d train (%d positive), %d eval (%d positive)", len(train), count(train), len(eval), count(eval))
	}
	seen := map[string]bool{}
	for _, r := range append(append([]dataset.Row(nil), train...), eval...) {
		if seen[r.Instruction] {
			t.Fatalf("review used twice: %q", r.Instruction)
		}
		seen[r.Instruction] = true
		var n int
		fmt.Sscanf(strings.TrimPrefix(r.Instruction, "Review: Review number "), "%d", &n)
		if want := map[bool]string{true: Positive, false: Negative}[n%2 == 0]; r.Response != want {
			t.Fatalf("review %d labelled %q, want %q", n, r.Response, want)
		}
	}
	_, erep, err := enc.Encode(dataset.Pairs(append(train, eval...)), dataset.EncodeOptions{SoftTokens: 4, MaxLen: 200})
	if err != nil || erep.TooLong != 0 {
		t.Fatalf("examples over the budget: %+v %v", erep, err)
	}
	train2, eval2, _, _ := BuildIMDB(enc, reviews, o)
	if !reflect.DeepEqual(train, train2) || !reflect.DeepEqual(eval, eval2) {
		t.Fatal("same seed, different data set")
	}
	if _, _, _, err := BuildIMDB(enc, reviews, IMDBOptions{Train: 3, Eval: 2, MaxLen: 200}); err == nil {
		t.Fatal("odd train size accepted")
	}
	if _, _, _, err := BuildIMDB(enc, reviews, IMDBOptions{Train: 40, Eval: 4, MaxLen: 200}); err == nil || !strings.Contains(err.Error(), "need 22 of each") {
		t.Fatalf("too few reviews: %v", err)
	}
}
