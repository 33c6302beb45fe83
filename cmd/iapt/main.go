// Command iapt is the IAPT toolkit: convert base models, generate text,
// train instruction-aware prompt adapters and serve them over an
// OpenAI-compatible HTTP API. Each job is a subcommand; see `iapt --help`.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the top-level command; subcommands register themselves in init.
var rootCmd = &cobra.Command{
	Use:   "iapt",
	Short: "Instruction-Aware Prompt Tuning on llama.cpp: convert, generate, train, serve",
	Long: `iapt runs GGUF base models through a patched llama.cpp and adds IAPT adapters:
small per-layer generators that turn the hidden states of a prompt's
instruction into soft tokens, so that requests of many adapters can decode
together in one batch on one frozen base model.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "iapt:", err)
		os.Exit(1)
	}
}
