// Package convert turns llama2.c checkpoints into GGUF files that llama.cpp
// loads with its "llama" architecture, and unpacks the Emscripten bundles
// that some llama2.c builds ship their model in.
package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/iapt-go/iapt/internal/atomicfile"
)

// filesTable finds the start of the file table that Emscripten's
// file_packager writes into the loader script: "files": [ {...}, ... ].
var filesTable = regexp.MustCompile(`"files"\s*:\s*\[`)

// bundleEntry is one file of an Emscripten package.
type bundleEntry struct {
	Filename string `json:"filename"`
	Start    int64  `json:"start"`
	End      int64  `json:"end"`
}

// ExtractEmscriptenBundle copies the files of an Emscripten file_packager
// bundle into outDir. jsPath is the loader script that holds the file table
// ("files":[{"filename":"/model.bin","start":0,"end":...},...]) and dataPath
// the .data file the ranges point into. It returns, for each file name
// without its leading '/', the path written. Ranges are checked against the
// size of the data file, names must stay inside outDir, and each file is
// written atomically.
func ExtractEmscriptenBundle(jsPath, dataPath, outDir string) (map[string]string, error) {
	entries, err := readBundleTable(jsPath)
	if err != nil {
		return nil, err
	}
	data, err := os.Open(dataPath)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	st, err := data.Stat()
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(entries))
	for _, e := range entries {
		name := strings.TrimPrefix(e.Filename, "/")
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return nil, fmt.Errorf("%s: file name %q does not name a file inside the output folder", jsPath, e.Filename)
		}
		if _, dup := names[name]; dup {
			return nil, fmt.Errorf("%s: file %q is listed twice", jsPath, e.Filename)
		}
		if e.Start < 0 || e.End < e.Start || e.End > st.Size() {
			return nil, fmt.Errorf("%s: file %q has byte range [%d, %d), outside the %d bytes of %s",
				jsPath, e.Filename, e.Start, e.End, st.Size(), dataPath)
		}
		names[name] = filepath.Join(outDir, filepath.FromSlash(name))
	}
	for _, e := range entries {
		dest := names[strings.TrimPrefix(e.Filename, "/")]
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return nil, err
		}
		err := atomicfile.Write(dest, func(w io.Writer) error {
			n, err := io.Copy(w, io.NewSectionReader(data, e.Start, e.End-e.Start))
			if err == nil && n != e.End-e.Start {
				err = fmt.Errorf("copied %d of %d bytes from %s", n, e.End-e.Start, dataPath)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return names, nil
}

// readBundleTable parses the file table of an Emscripten loader script.
func readBundleTable(jsPath string) ([]bundleEntry, error) {
	js, err := os.ReadFile(jsPath)
	if err != nil {
		return nil, err
	}
	locs := filesTable.FindAllIndex(js, -1)
	switch len(locs) {
	case 0:
		return nil, fmt.Errorf(`%s: no Emscripten file table ("files":[...]) found`, jsPath)
	case 1:
	default:
		return nil, fmt.Errorf(`%s: %d Emscripten file tables ("files":[...]) found, want one`, jsPath, len(locs))
	}
	// Decode just the array; the decoder stops at its closing bracket.
	var entries []bundleEntry
	dec := json.NewDecoder(bytes.NewReader(js[locs[0][1]-1:]))
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("%s: file table at byte %d: %w", jsPath, locs[0][0], err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: the Emscripten file table is empty", jsPath)
	}
	for i, e := range entries {
		if e.Filename == "" {
			return nil, fmt.Errorf("%s: file table entry %d has no filename", jsPath, i)
		}
	}
	return entries, nil
}
