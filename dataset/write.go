package dataset

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/atomicfile"
)

// Row is an instruction-style JSONL row, as WriteJSONL writes it.
type Row struct {
	Instruction string `json:"instruction"`
	Response    string `json:"response"`
}

// Pairs turns rows into pairs with one user turn each; Line is the row's
// line in a file WriteJSONL writes.
func Pairs(rows []Row) []Pair {
	out := make([]Pair, len(rows))
	for i, r := range rows {
		out[i] = Pair{Messages: []bridge.ChatMessage{{Role: "user", Content: r.Instruction}}, Response: r.Response, Line: i + 1}
	}
	return out
}

// WriteJSONL writes rows to path, one JSON object a line, atomically: a
// temporary file in the same folder is renamed over path once complete.
func WriteJSONL(path string, rows []Row) error {
	err := atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dataset: write: %w", err)
	}
	return nil
}
