// IAPT plugin for llama.cpp: the C API.
//
// An IAPT adapter (Instruction-Aware Prompt Tuning, Zhu et al., ACL 2024) is
// a small generator per Transformer layer that turns the hidden states of a
// prompt's instruction rows into m soft-token rows for that layer. The math
// and the GGUF file format are fixed in shared/IAPT-SPEC.md.
//
// Every function that can fail returns NULL/false/non-zero and, when err is
// not NULL, stores a malloc'ed message naming the file and the problem
// (free it with free()).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llama_iapt_adapter;

// iapt_adapter_load reads and validates an adapter GGUF against the model.
struct llama_iapt_adapter * iapt_adapter_load(const struct llama_model * model, const char * path, char ** err);
void iapt_adapter_free(struct llama_iapt_adapter * adapter);

// Shape of a loaded adapter.
uint32_t iapt_adapter_n_soft(const struct llama_iapt_adapter * adapter);
uint32_t iapt_adapter_bottleneck(const struct llama_iapt_adapter * adapter);
bool     iapt_adapter_share_updown(const struct llama_iapt_adapter * adapter);
// iapt_adapter_n_params is the number of generator parameters.
uint64_t iapt_adapter_n_params(const struct llama_iapt_adapter * adapter);

// iapt_adapter_meta_str copies a string metadata value (e.g. general.name,
// adapter.iapt.prompt_template) into buf like snprintf and returns its
// length, or -1 when the key is absent or not a string.
int32_t iapt_adapter_meta_str(const struct llama_iapt_adapter * adapter, const char * key, char * buf, size_t buf_size);

// iapt_context_set_adapter switches an adapter on for the following decodes
// of ctx (NULL switches it off). While it is on, every ubatch must be one
// prefill: m placeholder rows then the prompt, one sequence, positions
// 0..n-1; iapt_decode_prefill checks that and is the normal entry point.
bool iapt_context_set_adapter(struct llama_context * ctx, const struct llama_iapt_adapter * adapter, char ** err);

// iapt_decode_prefill decodes batch with the adapter switched on for this
// call only. The batch must hold exactly one sequence at positions 0..n-1
// (m placeholders, then at least one prompt token) and fit one ubatch;
// anything else is refused before llama.cpp sees it. Returns 0 on success.
int32_t iapt_decode_prefill(struct llama_context * ctx, const struct llama_iapt_adapter * adapter, struct llama_batch batch, char ** err);

#ifdef __cplusplus
}
#endif
