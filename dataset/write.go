package dataset

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iapt-go/iapt/bridge"
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
func WriteJSONL(path string, rows []Row) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("dataset: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("dataset: write %s: %w", path, err)
		}
	}()
	w := bufio.NewWriter(tmp)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
