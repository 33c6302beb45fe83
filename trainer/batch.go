package trainer

import (
	"errors"
	"fmt"
)

// Example is one instruction/response pair as token ids.
type Example struct {
	// Instruction holds the n instruction tokens as the tokenizer and chat
	// template produce them (BOS included when the model adds one).
	Instruction []int32
	// Response holds the k response tokens (EOS included).
	Response []int32
}

// Batch is a right-padded batch of B sequences of T rows, laid out as the IAPT
// specification says: m placeholder rows, the instruction, the response, then
// padding. Row t of every sequence is at position t. All slices indexed by row
// are row-major [B][T].
type Batch struct {
	// B and T are the number of sequences and of rows per sequence.
	B, T int
	// Tokens holds the token id of every row. Placeholder and padding rows
	// need only hold valid ids; their values do not matter.
	Tokens []int32
	// Lengths holds the number of valid rows of each sequence (m+n+k); rows
	// from Lengths[b] on are padding.
	Lengths []int
	// Instruction marks the instruction rows, which must be rows m .. m+n-1
	// of the sequence (n may be 0). Ignored, and may be nil, without an adapter.
	Instruction []bool
	// Loss marks the rows whose token is a response token to predict: the
	// loss at row t is the cross-entropy of Tokens[t] under the logits of row
	// t-1. May be nil when only logits are wanted.
	Loss []bool
}

// NewBatch lays out examples for an adapter with m soft tokens (0 for the
// bare base model): each sequence is m rows of fill, the instruction, the
// response and right padding with fill up to the longest sequence. The loss
// covers every response token except one at row m, which has no row before
// it to predict it (an empty instruction).
func NewBatch(m int, examples []Example, fill int32) (*Batch, error) {
	if m < 0 {
		return nil, fmt.Errorf("trainer: batch: negative soft token count %d", m)
	}
	if len(examples) == 0 {
		return nil, errors.New("trainer: batch: no examples")
	}
	t := 0
	for _, e := range examples {
		t = max(t, m+len(e.Instruction)+len(e.Response))
	}
	if t == 0 {
		return nil, errors.New("trainer: batch: every example is empty")
	}
	b := &Batch{
		B: len(examples), T: t,
		Tokens:      make([]int32, len(examples)*t),
		Lengths:     make([]int, len(examples)),
		Instruction: make([]bool, len(examples)*t),
		Loss:        make([]bool, len(examples)*t),
	}
	for i, e := range examples {
		row := b.Tokens[i*t : (i+1)*t]
		for j := range row {
			row[j] = fill
		}
		n := copy(row[m:], e.Instruction)
		k := copy(row[m+n:], e.Response)
		b.Lengths[i] = m + n + k
		for j := m; j < m+n; j++ {
			b.Instruction[i*t+j] = true
		}
		// Row m is not predicted: row m-1 is a soft row (or, without soft
		// tokens, there is no row before it).
		for j := max(m+n, m+1); j < m+n+k; j++ {
			b.Loss[i*t+j] = true
		}
	}
	return b, nil
}

// check validates the batch for a model with vocabulary vocab, context length
// maxT and m soft tokens (0 without adapter). needLoss requires at least one
// loss row.
func (b *Batch) check(vocab, maxT, m int, needLoss bool) error {
	if b == nil {
		return errors.New("trainer: batch: nil")
	}
	if b.B <= 0 || b.T <= 0 {
		return fmt.Errorf("trainer: batch: B=%d and T=%d must be positive", b.B, b.T)
	}
	if b.T > maxT {
		return fmt.Errorf("trainer: batch: %d rows exceed the model's context length %d", b.T, maxT)
	}
	n := b.B * b.T
	if len(b.Tokens) != n || len(b.Lengths) != b.B {
		return fmt.Errorf("trainer: batch: %d tokens and %d lengths for B=%d, T=%d", len(b.Tokens), len(b.Lengths), b.B, b.T)
	}
	if m > 0 && len(b.Instruction) != n {
		return fmt.Errorf("trainer: batch: %d instruction flags for %d rows", len(b.Instruction), n)
	}
	if b.Loss != nil && len(b.Loss) != n {
		return fmt.Errorf("trainer: batch: %d loss flags for %d rows", len(b.Loss), n)
	}
	for i, id := range b.Tokens {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("trainer: batch: sequence %d row %d: token id %d outside the vocabulary [0, %d)", i/b.T, i%b.T, id, vocab)
		}
	}
	lossRows := 0
	for s, length := range b.Lengths {
		if length <= m || length > b.T {
			return fmt.Errorf("trainer: batch: sequence %d: length %d must be in (%d, %d]", s, length, m, b.T)
		}
		instrEnd := m // instruction rows are [m, instrEnd)
		for t := range b.T {
			instr := m > 0 && b.Instruction[s*b.T+t]
			if instr {
				if t != instrEnd || t >= length {
					return fmt.Errorf("trainer: batch: sequence %d: instruction row %d is not in the block of rows %d.. right after the %d soft rows", s, t, instrEnd, m)
				}
				instrEnd++
			}
			if b.Loss != nil && b.Loss[s*b.T+t] {
				if instr || t <= m || t >= length {
					return fmt.Errorf("trainer: batch: sequence %d: loss row %d must be a response row in (%d, %d)", s, t, m, length)
				}
				lossRows++
			}
		}
	}
	if needLoss && lossRows == 0 {
		return errors.New("trainer: batch: no loss rows")
	}
	return nil
}
