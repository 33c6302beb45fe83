package dataset

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/prompt"
)

func userPair(instr, resp string, line int) Pair {
	return Pair{Messages: []bridge.ChatMessage{{Role: "user", Content: instr}}, Response: resp, Line: line}
}

func TestEncodeInvariants(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	info := m.Info()
	enc, err := NewEncoder(m, "")
	if err != nil {
		t.Fatal(err)
	}
	if enc.Template() != prompt.DefaultTemplate {
		t.Fatalf("stories15M has no chat template, so the default one applies; got %q", enc.Template())
	}
	pairs := []Pair{
		userPair("Write a story about Tom and a ball.", "Tom had a red ball. He played with it all day.", 1),
		{Messages: []bridge.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Say hi </s> <s>"}}, Response: "Hi </s>", Line: 2},
	}
	exs, rep, err := enc.Encode(pairs, EncodeOptions{SoftTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 2 || rep.Kept != 2 || rep.TooLong != 0 || rep.MaxLen != info.CtxTrain {
		t.Fatalf("report %+v", rep)
	}
	for i, ex := range exs {
		if ex.Instruction[0] != info.BOS || slices.Contains(ex.Instruction[1:], info.BOS) {
			t.Errorf("example %d: instruction %v must hold BOS first and only there", i, ex.Instruction)
		}
		if ex.Response[len(ex.Response)-1] != info.EOS || slices.Contains(ex.Response[:len(ex.Response)-1], info.EOS) ||
			slices.Contains(ex.Response, info.BOS) || slices.Contains(ex.Instruction, info.EOS) {
			t.Errorf("example %d: response %v must end with EOS, hold no other control token; instruction %v none", i, ex.Response, ex.Instruction)
		}
		text, _ := prompt.Render(prompt.DefaultTemplate, pairs[i].Messages)
		want, _ := m.Tokenize(text, true, false)
		if !reflect.DeepEqual(ex.Instruction, want) {
			t.Errorf("example %d: instruction %v, want the tokens of %q: %v", i, ex.Instruction, text, want)
		}
		got, _ := m.Detokenize(ex.Response[:len(ex.Response)-1], false, false)
		if strings.TrimSpace(got) != pairs[i].Response {
			t.Errorf("example %d: response detokenizes to %q, want %q", i, got, pairs[i].Response)
		}
	}
	var sumIn, sumOut int
	for _, ex := range exs {
		sumIn += len(ex.Instruction)
		sumOut += len(ex.Response)
	}
	if rep.Instruction.Total != sumIn || rep.Response.Total != sumOut || rep.Total.Total != sumIn+sumOut+8 || rep.Total.N != 2 {
		t.Fatalf("stats %+v, want instruction total %d, response total %d", rep, sumIn, sumOut)
	}
}

func TestEncodeLengthLimit(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	enc, err := NewEncoder(m, "")
	if err != nil {
		t.Fatal(err)
	}
	short := userPair("Hi.", "Hello.", 10)
	ex, err := enc.Example(short.Messages, short.Response)
	if err != nil {
		t.Fatal(err)
	}
	n := 4 + len(ex.Instruction) + len(ex.Response)
	long := strings.Repeat("The cat sat on the mat. ", 30)
	var pairs []Pair
	for i := 0; i < 14; i++ {
		switch {
		case i%2 == 0:
			pairs = append(pairs, userPair("Hi.", "Hello.", 10+i))
		case i == 1:
			pairs = append(pairs, userPair("Hi.", long, 10+i)) // long response: dropped, never cut
		default:
			pairs = append(pairs, userPair(long, "Hello.", 10+i))
		}
	}
	// Exactly at the limit the short pairs fit; one less and they do not.
	exs, rep, err := enc.Encode(pairs, EncodeOptions{SoftTokens: 4, MaxLen: n})
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 7 || rep.Kept != 7 || rep.TooLong != 7 || rep.Pairs != 14 {
		t.Fatalf("kept %d, report %+v; want 7 kept, 7 too long", len(exs), rep)
	}
	if want := []int{0, 2, 4, 6, 8, 10, 12}; !reflect.DeepEqual(rep.Index, want) {
		t.Fatalf("kept pair indices %v, want %v", rep.Index, want)
	}
	if want := []int{11, 13, 15, 17, 19, 21, 23}; !reflect.DeepEqual(rep.TooLongLines, want) {
		t.Fatalf("too-long lines %v, want %v", rep.TooLongLines, want)
	}
	if rep.Total.Max != n || !strings.Contains(rep.String(), "7 too long, dropped (lines [11 13 15 17 19 21 23])") {
		t.Fatalf("report %+v / %s", rep, rep)
	}
	if _, rep, _ := enc.Encode(pairs[:1], EncodeOptions{SoftTokens: 4, MaxLen: n - 1}); rep.Kept != 0 || rep.TooLong != 1 {
		t.Fatalf("one token over the limit kept: %+v", rep)
	}
	// Many too-long pairs: the first few lines are listed.
	many := slices.Repeat([]Pair{userPair(long, "x", 3)}, 12)
	if _, rep, _ := enc.Encode(many, EncodeOptions{MaxLen: 50}); rep.TooLong != 12 || len(rep.TooLongLines) != maxReportedLines || !strings.Contains(rep.String(), "...)") {
		t.Fatalf("report of 12 too long: %+v", rep)
	}
	// The limit is capped at the model's context.
	if _, rep, _ := enc.Encode(pairs[:1], EncodeOptions{MaxLen: 100000}); rep.MaxLen != m.Info().CtxTrain {
		t.Fatalf("max len %d, want the context %d", rep.MaxLen, m.Info().CtxTrain)
	}
	if _, _, err := enc.Encode(pairs, EncodeOptions{SoftTokens: -1}); err == nil {
		t.Fatal("negative soft tokens accepted")
	}
	bad := Pair{Messages: []bridge.ChatMessage{{Role: "robot", Content: "x"}}, Response: "y", Line: 42}
	if _, _, err := enc.Encode([]Pair{bad}, EncodeOptions{}); err == nil || !strings.Contains(err.Error(), "line 42") {
		t.Fatalf("bad role: %v", err)
	}
}

func TestEncodeChatTemplate(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	enc, err := NewEncoder(m, "chatml")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []bridge.ChatMessage{{Role: "user", Content: "Hi"}}
	ex, err := enc.Example(msgs, "Hello")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := prompt.Render("chatml", msgs)
	want, _ := m.Tokenize(text, true, true)
	if !strings.Contains(text, "<|im_start|>assistant") || !reflect.DeepEqual(ex.Instruction, want) {
		t.Fatalf("chatml prompt %q: tokens %v, want %v", text, ex.Instruction, want)
	}
}
