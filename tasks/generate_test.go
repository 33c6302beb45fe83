package tasks

import (
	"reflect"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
)

var testSampler = bridge.SamplerParams{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 5}

func TestGenerateStories(t *testing.T) {
	m, _ := loadModel(t)
	prompts := []string{"Once upon a time", "One day, Tom found a kite.", "Lily was a little girl who"}
	o := GenOptions{MaxTokens: 24, Parallel: 2, Threads: 1, Sampler: testSampler}
	var progress []int
	o.Progress = func(done, total int) {
		if total != 3 {
			t.Errorf("progress total %d, want 3", total)
		}
		progress = append(progress, done)
	}
	got, err := GenerateStories(m, prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(progress, []int{1, 2, 3}) {
		t.Fatalf("progress %v", progress)
	}
	for i, g := range got {
		if g.Prompt != prompts[i] || !strings.HasPrefix(g.Text, g.Prompt) || len(g.Text) <= len(g.Prompt) {
			t.Fatalf("story %d: %+v", i, g)
		}
		if g.Tokens < 1 || g.Tokens > 24 || (g.Finish == "length") != (g.Tokens == 24) || (g.Finish != "length" && g.Finish != "stop") {
			t.Fatalf("story %d: %d tokens, finish %q", i, g.Tokens, g.Finish)
		}
	}
	// The same seed gives the same stories; story i does not depend on
	// which slot or schedule generated it.
	o.Progress, o.Parallel = nil, 3
	again, err := GenerateStories(m, prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, got) {
		t.Fatalf("another schedule, different stories:\n%+v\n%+v", again, got)
	}
	one, err := GenerateStories(m, prompts[2:], GenOptions{MaxTokens: 24, Parallel: 1, Threads: 1, Sampler: bridge.SamplerParams{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 7}})
	if err != nil || one[0] != got[2] {
		t.Fatalf("story 2 alone (seed 5+2) = %+v, %v; in the batch %+v", one, err, got[2])
	}
	if _, err := GenerateStories(m, prompts, GenOptions{MaxTokens: 300, Parallel: 1}); err == nil || !strings.Contains(err.Error(), "exceed the model's context") {
		t.Fatalf("300 tokens in a context of 256: %v", err)
	}
	if _, err := GenerateStories(m, prompts, GenOptions{MaxTokens: 10}); err == nil {
		t.Fatal("parallel 0 accepted")
	}
}

func TestBuildStories(t *testing.T) {
	m, enc := loadModel(t)
	o := StoriesOptions{N: 3, Seed: 2, Gen: GenOptions{MaxTokens: 96, Parallel: 4, Threads: 1, Sampler: testSampler}, SoftTokens: 4}
	stories, rep, err := BuildStories(m, enc, o)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for _, n := range rep.Rejected {
		rejected += n
	}
	if len(stories) != 3 || rep.Generated < 3 || rep.Generated < 3+rejected || rep.Tokens == 0 {
		t.Fatalf("%d stories, report %+v", len(stories), rep)
	}
	for _, s := range stories {
		row := s.Row()
		if !StoryFollows(row.Instruction, row.Response) {
			t.Fatalf("a derived story does not follow its own instruction: %+v", row)
		}
		if trimmed, _ := TrimToSentences(s.Text); trimmed != s.Text {
			t.Fatalf("story not cut to whole sentences: %q", s.Text)
		}
	}
	again, _, err := BuildStories(m, enc, o)
	if err != nil || !reflect.DeepEqual(again, stories) {
		t.Fatalf("same seed, different stories (%v)", err)
	}
	o.MaxLen, o.Gen.MaxTokens = 40, 8 // no story fits: an error, not an endless loop
	if _, _, err := BuildStories(m, enc, o); err == nil || !strings.Contains(err.Error(), "none of") {
		t.Fatalf("no usable story: %v", err)
	}
}
