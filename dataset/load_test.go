package dataset

import (
	"reflect"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
)

func TestParseBothStyles(t *testing.T) {
	in := "\ufeff" + `{"instruction": "Name a colour.", "response": "Red.", "id": 7}

{"instruction": "Translate.", "input": "chat", "system": "Be brief.", "response": "cat"}
{"instruction": "Say hi.", "input": "", "system": null, "response": "Hi!"}
{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And now?"}, {"role": "assistant", "content": "Still hello."}]}
`
	pairs, rep, err := Parse(strings.NewReader(in), "a.jsonl", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	user := func(s string) bridge.ChatMessage { return bridge.ChatMessage{Role: "user", Content: s} }
	want := []Pair{
		{Messages: []bridge.ChatMessage{user("Name a colour.")}, Response: "Red.", Line: 1},
		{Messages: []bridge.ChatMessage{{Role: "system", Content: "Be brief."}, user("Translate.\n\nchat")}, Response: "cat", Line: 3},
		{Messages: []bridge.ChatMessage{user("Say hi.")}, Response: "Hi!", Line: 4},
		{Messages: []bridge.ChatMessage{{Role: "system", Content: "Be kind."}, user("Hi"), {Role: "assistant", Content: "Hello."}, user("And now?")},
			Response: "Still hello.", Line: 5},
	}
	if !reflect.DeepEqual(pairs, want) {
		t.Fatalf("pairs:\n%+v\nwant\n%+v", pairs, want)
	}
	if rep.Rows != 4 || rep.Pairs != 4 || len(rep.Skipped) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if got := rep.String(); got != "a.jsonl: 4 rows, 4 pairs, 0 skipped" {
		t.Fatalf("report string %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	good := `{"instruction": "a", "response": "b"}` + "\n"
	for _, c := range []struct{ row, want string }{
		{`{"instruction": "a", "response": "b"`, "bad JSON"},
		{`{"instruction": "a", "response": "b"} x`, "bad JSON"},
		{`[1, 2]`, "row is an array, want a JSON object"},
		{`null`, "row is null"},
		{`{"prompt": "a"}`, `neither "instruction" nor "messages"`},
		{`{"instruction": "a"}`, `missing field "response"`},
		{`{"instruction": 3, "response": "b"}`, `field "instruction" is a number, want a string`},
		{`{"instruction": "a", "response": null}`, `field "response" is null, want a string`},
		{`{"instruction": "a", "response": "b", "input": ["x"]}`, `field "input" is an array`},
		{`{"instruction": "a", "messages": []}`, `both "messages" and "instruction"`},
		{`{"messages": "hi"}`, `field "messages" is a string, want an array`},
		{`{"messages": [{"role": "user", "content": "a"}]}`, "no assistant turn"},
		{`{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}`, `messages[0]: missing field "content"`},
		{`{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}`, `messages[1].role is "bot"`},
		{`{"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "b"}]}`, `messages[0].content is a number`},
		{`{"messages": [7]}`, `messages[0] is a number, want an object`},
	} {
		_, _, err := Parse(strings.NewReader(good+"\n"+c.row+"\n"+good), "d.jsonl", LoadOptions{})
		if err == nil || !strings.HasPrefix(err.Error(), "d.jsonl:3: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("row %s: got error %v, want d.jsonl:3: ...%s...", c.row, err, c.want)
		}
	}
}

func TestParseSkips(t *testing.T) {
	in := `{"instruction": "a", "response": "b"}
{"instruction": "a", "response": "  "}
{"instruction": " ", "input": "", "response": "b"}
{"instruction": "", "input": "only input", "response": "b"}
{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}
{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}
{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}
`
	pairs, rep, err := Parse(strings.NewReader(in), "s.jsonl", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 2 || pairs[0].Line != 1 || pairs[1].Line != 4 || pairs[1].Messages[0].Content != "only input" {
		t.Fatalf("pairs %+v", pairs)
	}
	want := map[string]int{SkipEmptyResponse: 2, SkipEmptyInstruction: 2, SkipTrailingTurns: 1}
	if !reflect.DeepEqual(rep.Skipped, want) || rep.Rows != 7 || rep.Pairs != 2 {
		t.Fatalf("report %+v, want skipped %v", rep, want)
	}
	if got := rep.String(); got != "s.jsonl: 7 rows, 2 pairs, 5 skipped (empty instruction: 2, empty response: 2, turns after the last assistant turn: 1)" {
		t.Fatalf("report string %q", got)
	}
	_, _, err = Parse(strings.NewReader(in), "s.jsonl", LoadOptions{Strict: true})
	if err == nil || err.Error() != "s.jsonl:2: empty response (strict mode)" {
		t.Fatalf("strict: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, _, err := Load(t.TempDir()+"/none.jsonl", LoadOptions{}); err == nil || !strings.Contains(err.Error(), "none.jsonl") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestWriteJSONLRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/out.jsonl"
	rows := []Row{{Instruction: "Review: <b>great</b> & fun\nIs it good?", Response: "positive"}, {Instruction: "é \"q\"", Response: "x\ny"}}
	if err := WriteJSONL(path, rows); err != nil {
		t.Fatal(err)
	}
	pairs, _, err := Load(path, LoadOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pairs, Pairs(rows)) {
		t.Fatalf("read back %+v, want %+v", pairs, Pairs(rows))
	}
	if err := WriteJSONL(dir+"/missing/out.jsonl", rows); err == nil || !strings.Contains(err.Error(), "missing/out.jsonl") {
		t.Fatalf("write into a missing folder: %v", err)
	}
	entries, _ := readDir(t, dir)
	if !reflect.DeepEqual(entries, []string{"out.jsonl"}) {
		t.Fatalf("folder holds %v, want only out.jsonl (no temporary files)", entries)
	}
}
