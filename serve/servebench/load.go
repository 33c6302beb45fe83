package servebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LoadConfig is a load of concurrent streaming clients, one per entry of
// Models, each sending Rounds greedy completion requests one after another.
type LoadConfig struct {
	// URL is the server's root, e.g. "http://127.0.0.1:8080".
	URL string
	// APIKey is sent as a bearer token when set.
	APIKey    string
	Models    []string
	Rounds    int
	Prompt    string
	MaxTokens int
}

// Load runs the clients and measures aggregate tokens/s and each request's
// time to first token (the first chunk with text).
func Load(ctx context.Context, c LoadConfig) (Result, error) {
	if len(c.Models) == 0 || c.Rounds < 1 || c.MaxTokens < 1 {
		return Result{}, fmt.Errorf("load: want models, rounds >= 1 and max tokens >= 1, got %+v", c)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(c.Models)}}
	defer client.CloseIdleConnections()
	var (
		mu   sync.Mutex
		res  Result
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for _, model := range c.Models {
		wg.Go(func() {
			for range c.Rounds {
				ttft, tokens, err := stream(ctx, client, c, model)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					res.Requests++
					res.Tokens += tokens
					res.TTFT = append(res.TTFT, ttft)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	res.Wall = time.Since(start)
	return res, errors.Join(errs...)
}

// chunk is what Load reads of a streamed completion chunk.
type chunk struct {
	Choices []struct {
		Text string `json:"text"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// stream sends one streaming completion request and reads it to the end.
func stream(ctx context.Context, client *http.Client, c LoadConfig, model string) (ttft time.Duration, tokens int, err error) {
	body, err := json.Marshal(map[string]any{
		"model": model, "prompt": c.Prompt, "max_tokens": c.MaxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]bool{"include_usage": true},
	})
	if err != nil {
		return 0, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(c.URL, "/")+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, 0, fmt.Errorf("%s: status %d: %s", model, resp.StatusCode, bytes.TrimSpace(msg))
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return 0, 0, fmt.Errorf("%s: stream ended without [DONE]: %w", model, err)
		}
		data, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == "[DONE]" {
			return ttft, tokens, nil
		}
		var ch chunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return 0, 0, fmt.Errorf("%s: bad chunk %q: %w", model, data, err)
		}
		switch {
		case ch.Error != nil:
			return 0, 0, fmt.Errorf("%s: %s", model, ch.Error.Message)
		case ch.Usage != nil:
			tokens = ch.Usage.CompletionTokens
		case ttft == 0 && len(ch.Choices) > 0 && ch.Choices[0].Text != "":
			ttft = time.Since(sent)
		}
	}
}
