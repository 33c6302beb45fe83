package tasks

import (
	"fmt"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
)

// RejectTooLong is the reason BuildStories gives for a story whose example
// does not fit the length limit.
const RejectTooLong = "too long for the length limit"

// StoriesOptions configure BuildStories.
type StoriesOptions struct {
	// N is the number of usable stories wanted.
	N int
	// Seed draws the prompts; story i is sampled with seed Seed + i.
	Seed uint64
	// Gen configures the generation; its Sampler.Seed is ignored (see
	// Seed) and Progress receives the stories generated so far.
	Gen GenOptions
	// SoftTokens and MaxLen: a story is kept only if SoftTokens +
	// instruction tokens + response tokens <= MaxLen (0: the model's
	// training context).
	SoftTokens, MaxLen int
}

// StoriesReport says what BuildStories generated and rejected.
type StoriesReport struct {
	// Generated counts the stories generated, Tokens their tokens, Ended
	// the stories the model ended itself (the others hit the token limit
	// and were cut to whole sentences).
	Generated, Tokens, Ended int
	// Rejected counts the unusable stories by reason.
	Rejected map[string]int
}

// BuildStories generates stories from StoryPrompts until n are usable and
// derives their instructions (DeriveStory); enc checks the length limit.
// It generates in rounds, sized by the share of usable stories so far, and
// returns the first N usable stories in prompt order.
func BuildStories(model *bridge.Model, enc *dataset.Encoder, o StoriesOptions) ([]Story, StoriesReport, error) {
	rep := StoriesReport{Rejected: map[string]int{}}
	if o.N <= 0 {
		return nil, rep, fmt.Errorf("stories: the number of stories %d must be positive", o.N)
	}
	maxLen := o.MaxLen
	if maxLen == 0 {
		maxLen = model.Info().CtxTrain
	}
	var out []Story
	gen := o.Gen
	for len(out) < o.N {
		// Expect the yield seen so far (at first 3/4), with some margin.
		missing := o.N - len(out)
		batch := missing*4/3 + 8
		if rep.Generated > 0 && len(out) > 0 {
			batch = missing*rep.Generated/len(out) + missing/10 + 8
		} else if rep.Generated >= 64 {
			return nil, rep, fmt.Errorf("stories: none of %d generated stories was usable (%v)", rep.Generated, rep.Rejected)
		}
		all := StoryPrompts(rep.Generated+batch, o.Seed)
		gen.Sampler.Seed = uint32(o.Seed) + uint32(rep.Generated)
		if o.Gen.Progress != nil {
			before := rep.Generated
			gen.Progress = func(done, _ int) { o.Gen.Progress(before+done, len(all)) }
		}
		stories, err := GenerateStories(model, all[rep.Generated:], gen)
		if err != nil {
			return nil, rep, err
		}
		rep.Generated += len(stories)
		for _, g := range stories {
			rep.Tokens += g.Tokens
			if g.Finish == "stop" {
				rep.Ended++
			}
			s, reject := DeriveStory(g.Text)
			if reject == "" {
				row := s.Row()
				ex, err := enc.Example([]bridge.ChatMessage{{Role: "user", Content: row.Instruction}}, row.Response)
				if err != nil {
					return nil, rep, fmt.Errorf("stories: %w", err)
				}
				if o.SoftTokens+len(ex.Instruction)+len(ex.Response) > maxLen {
					reject = RejectTooLong
				}
			}
			switch {
			case reject != "":
				rep.Rejected[reject]++
			case len(out) < o.N:
				out = append(out, s)
			}
		}
	}
	return out, rep, nil
}
