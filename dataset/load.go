// Package dataset reads instruction-tuning data from JSONL files, shuffles
// and splits it deterministically, and encodes it into token ids with the
// base model's tokenizer and the prompt template used for serving.
//
// Two row styles are accepted, one JSON object per line (blank lines are
// ignored):
//
//	{"instruction": "...", "response": "...", "input": "...", "system": "..."}
//	{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
//
// In the instruction style "input" and "system" are optional: the user turn
// is the instruction followed by a blank line and the input (as in Alpaca),
// and a non-empty system text becomes a system turn before it. In the chat
// style the last assistant turn is the response and the turns before it are
// the conversation. Other fields are ignored.
//
// A row that is not valid JSON, has a field of the wrong type, lacks a
// required field, has an unknown role or no assistant turn is an error
// naming file:line. A row that is well formed but unusable (empty response,
// empty instruction, turns after the last assistant turn) is skipped and
// counted by reason, or is an error with LoadOptions.Strict.
package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/iapt-go/iapt/bridge"
)

// Pair is one training example as text: the conversation that precedes the
// answer, and the answer.
type Pair struct {
	// Messages is the conversation before the response (system, user and
	// earlier assistant turns).
	Messages []bridge.ChatMessage
	// Response is the assistant's answer to learn.
	Response string
	// Line is the 1-based line of the row in its file (0 when the pair was
	// not read from a file).
	Line int
}

// Reasons for skipping a well-formed row.
const (
	SkipEmptyResponse    = "empty response"
	SkipEmptyInstruction = "empty instruction"
	SkipTrailingTurns    = "turns after the last assistant turn"
)

// LoadOptions configure Load and Parse.
type LoadOptions struct {
	// Strict turns every skipped row into an error.
	Strict bool
}

// LoadReport sums up what Load read.
type LoadReport struct {
	// File is the name used in messages.
	File string
	// Rows counts the non-blank lines.
	Rows int
	// Pairs counts the rows kept.
	Pairs int
	// Skipped counts the skipped rows by reason.
	Skipped map[string]int
}

// String renders the report on one line, e.g.
// "train.jsonl: 120 rows, 118 pairs, 2 skipped (empty response: 2)".
func (r LoadReport) String() string {
	n := 0
	reasons := make([]string, 0, len(r.Skipped))
	for reason, c := range r.Skipped {
		n += c
		reasons = append(reasons, reason)
	}
	s := fmt.Sprintf("%s: %d rows, %d pairs, %d skipped", r.File, r.Rows, r.Pairs, n)
	if n == 0 {
		return s
	}
	sort.Strings(reasons)
	parts := make([]string, len(reasons))
	for i, reason := range reasons {
		parts[i] = fmt.Sprintf("%s: %d", reason, r.Skipped[reason])
	}
	return s + " (" + strings.Join(parts, ", ") + ")"
}

// Load reads a JSONL file of pairs.
func Load(path string, o LoadOptions) ([]Pair, LoadReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, LoadReport{File: path}, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	return Parse(f, path, o)
}

// Parse reads JSONL pairs from r; name (usually the file path) prefixes
// every error as name:line.
func Parse(r io.Reader, name string, o LoadOptions) ([]Pair, LoadReport, error) {
	rep := LoadReport{File: name, Skipped: map[string]int{}}
	var pairs []Pair
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		text, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, rep, fmt.Errorf("%s:%d: read: %w", name, line, err)
		}
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(bytes.TrimSpace(text)) > 0 {
			rep.Rows++
			p, skip, perr := parseRow(text)
			switch {
			case perr != nil:
				return nil, rep, fmt.Errorf("%s:%d: %w", name, line, perr)
			case skip != "" && o.Strict:
				return nil, rep, fmt.Errorf("%s:%d: %s (strict mode)", name, line, skip)
			case skip != "":
				rep.Skipped[skip]++
			default:
				p.Line = line
				pairs = append(pairs, p)
			}
		}
		if err != nil { // io.EOF
			break
		}
	}
	rep.Pairs = len(pairs)
	return pairs, rep, nil
}

// parseRow decodes one row; a non-empty skip names why a well-formed row is
// unusable.
func parseRow(text []byte) (p Pair, skip string, err error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(text, &obj); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return p, "", fmt.Errorf("bad JSON at byte %d: %v", syn.Offset, syn)
		}
		return p, "", fmt.Errorf("row is %s, want a JSON object", kind(bytes.TrimSpace(text)))
	}
	if obj == nil {
		return p, "", errors.New("row is null, want a JSON object")
	}
	_, hasMsgs := obj["messages"]
	_, hasInstr := obj["instruction"]
	switch {
	case hasMsgs && hasInstr:
		return p, "", errors.New(`row has both "messages" and "instruction"; use one style`)
	case hasMsgs:
		return parseChat(obj["messages"])
	case hasInstr:
		return parseInstruction(obj)
	}
	return p, "", errors.New(`row has neither "instruction" nor "messages"`)
}

// parseInstruction reads an instruction-style row.
func parseInstruction(obj map[string]json.RawMessage) (p Pair, skip string, err error) {
	get := func(key string, required bool) (string, error) {
		raw, ok := obj[key]
		if !ok || (!required && string(raw) == "null") {
			if required {
				return "", fmt.Errorf("missing field %q", key)
			}
			return "", nil
		}
		return stringValue(raw, fmt.Sprintf("field %q", key))
	}
	instr, err := get("instruction", true)
	if err != nil {
		return p, "", err
	}
	resp, err := get("response", true)
	if err != nil {
		return p, "", err
	}
	input, err := get("input", false)
	if err != nil {
		return p, "", err
	}
	system, err := get("system", false)
	if err != nil {
		return p, "", err
	}
	user := joinNonBlank(instr, input)
	if user == "" {
		return p, SkipEmptyInstruction, nil
	}
	if strings.TrimSpace(resp) == "" {
		return p, SkipEmptyResponse, nil
	}
	if strings.TrimSpace(system) != "" {
		p.Messages = append(p.Messages, bridge.ChatMessage{Role: "system", Content: system})
	}
	p.Messages = append(p.Messages, bridge.ChatMessage{Role: "user", Content: user})
	p.Response = resp
	return p, "", nil
}

// joinNonBlank joins the texts that are not blank with a blank line.
func joinNonBlank(texts ...string) string {
	var parts []string
	for _, t := range texts {
		if strings.TrimSpace(t) != "" {
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, "\n\n")
}

// parseChat reads a chat-style row's messages.
func parseChat(raw json.RawMessage) (p Pair, skip string, err error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return p, "", fmt.Errorf(`field "messages" is %s, want an array of {"role", "content"} objects`, kind(raw))
	}
	msgs := make([]bridge.ChatMessage, len(items))
	last := -1
	for i, item := range items {
		where := fmt.Sprintf("messages[%d]", i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(item, &m); err != nil || m == nil {
			return p, "", fmt.Errorf("%s is %s, want an object", where, kind(item))
		}
		for _, key := range []string{"role", "content"} {
			if _, ok := m[key]; !ok {
				return p, "", fmt.Errorf("%s: missing field %q", where, key)
			}
		}
		role, err := stringValue(m["role"], where+".role")
		if err != nil {
			return p, "", err
		}
		content, err := stringValue(m["content"], where+".content")
		if err != nil {
			return p, "", err
		}
		switch role {
		case "assistant":
			last = i
		case "system", "user":
		default:
			return p, "", fmt.Errorf("%s.role is %q, want system, user or assistant", where, role)
		}
		msgs[i] = bridge.ChatMessage{Role: role, Content: content}
	}
	if last < 0 {
		return p, "", errors.New(`"messages" has no assistant turn (the response)`)
	}
	if last != len(msgs)-1 {
		return p, SkipTrailingTurns, nil
	}
	if strings.TrimSpace(msgs[last].Content) == "" {
		return p, SkipEmptyResponse, nil
	}
	hasUser := false
	for _, m := range msgs[:last] {
		hasUser = hasUser || (m.Role == "user" && strings.TrimSpace(m.Content) != "")
	}
	if !hasUser {
		return p, SkipEmptyInstruction, nil
	}
	return Pair{Messages: msgs[:last], Response: msgs[last].Content}, "", nil
}

// stringValue decodes a JSON string, naming what in the error.
func stringValue(raw json.RawMessage, what string) (string, error) {
	var s string
	if k := kind(raw); k != "a string" {
		return "", fmt.Errorf("%s is %s, want a string", what, k)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s: %v", what, err)
	}
	return s, nil
}

// kind names the JSON type of a (valid) JSON value.
func kind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "empty"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
