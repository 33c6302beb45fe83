package prompt

import (
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
)

func TestRender(t *testing.T) {
	msgs := []bridge.ChatMessage{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Write a story about Tom and a ball."}}
	got, err := Render(Choose("", ""), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if want := "### Instruction:\nBe kind.\n\nWrite a story about Tom and a ball.\n\n### Response:\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	got, err = Render(Choose("", "chatml"), msgs[1:])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "<|im_start|>user\nWrite a story") || !strings.HasSuffix(got, "<|im_start|>assistant\n") {
		t.Fatalf("chatml rendering %q", got)
	}
	if Choose("Q: {instruction}\nA:", "chatml") != "Q: {instruction}\nA:" {
		t.Fatal("the adapter's template must win")
	}
	if _, err := Render(DefaultTemplate, []bridge.ChatMessage{{Role: "robot", Content: "x"}}); err == nil || !strings.Contains(err.Error(), "robot") {
		t.Fatalf("bad role: %v", err)
	}
	if _, err := Render(DefaultTemplate, nil); err == nil {
		t.Fatal("no messages accepted")
	}
}
