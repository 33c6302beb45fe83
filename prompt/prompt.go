// Package prompt renders conversations into the prompt text a model sees,
// the same way for training and serving: with the template an adapter was
// trained with (stored in the adapter as adapter.iapt.prompt_template), else
// the base model's chat template, else DefaultTemplate.
package prompt

import (
	"errors"
	"fmt"
	"strings"

	"github.com/iapt-go/iapt/bridge"
)

// DefaultTemplate is the instruction template for base models without a
// chat template (such as stories15M). {instruction} is replaced by the
// conversation's system and user messages, joined by blank lines; the
// response follows the template directly.
const DefaultTemplate = "### Instruction:\n{instruction}\n\n### Response:\n"

// Placeholder marks where a simple template puts the instruction.
const Placeholder = "{instruction}"

// IsSimple reports whether tmpl is a simple {instruction} template rather
// than a chat template for llama.cpp.
func IsSimple(tmpl string) bool { return strings.Contains(tmpl, Placeholder) }

// Choose picks the template to use: the adapter's, else the model's chat
// template, else DefaultTemplate.
func Choose(adapterTemplate, modelTemplate string) string {
	switch {
	case adapterTemplate != "":
		return adapterTemplate
	case modelTemplate != "":
		return modelTemplate
	}
	return DefaultTemplate
}

// Render turns a conversation (ending with the user's turn) into the prompt
// text that precedes the assistant's answer.
func Render(tmpl string, msgs []bridge.ChatMessage) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("prompt: no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", fmt.Errorf("prompt: messages[%d].role is %q, want system, user or assistant", i, m.Role)
		}
	}
	if !IsSimple(tmpl) {
		return bridge.RenderChatTemplate(tmpl, msgs, true)
	}
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Role != "assistant" && m.Content != "" {
			parts = append(parts, m.Content)
		}
	}
	return strings.Replace(tmpl, Placeholder, strings.Join(parts, "\n\n"), 1), nil
}
