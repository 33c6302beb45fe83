// C helpers for the Go bridge: calls into llama.cpp that capture the error
// text llama.cpp logs (per thread, for the duration of one call) and turn
// C++ exceptions into error strings, so that every failure reaches Go as an
// error value instead of a log line or a crash.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// bridge_init installs the log handler (once) and initialises the backend.
void bridge_init(void);
// bridge_set_verbose turns llama.cpp's info/debug logging to stderr on or off.
void bridge_set_verbose(bool on);

// Each call below returns NULL/false/negative on failure and stores a
// malloc'ed message in *err (free with free()).
struct llama_model * bridge_model_load(const char * path, bool use_mmap, bool vocab_only, bool repack, char ** err);
struct llama_context * bridge_context_new(struct llama_model * model, struct llama_context_params p, char ** err);
int32_t bridge_decode(struct llama_context * ctx, struct llama_batch batch, char ** err);
struct llama_adapter_lora * bridge_lora_load(struct llama_model * model, const char * path, char ** err);
bool bridge_quantize(const char * in, const char * out, int ftype, int nthread, char ** err);
int32_t bridge_chat_apply(const char * tmpl, const char ** roles, const char ** contents, size_t n,
                          bool add_ass, char * buf, int32_t len, char ** err);

// bridge_graph_stats counts the nodes llama.cpp computes per decode (see
// bridge_count_nodes), for tests that compare graphs.
struct bridge_graph_stats {
    int64_t nodes;      // nodes computed
    int64_t iapt_nodes; // of which named iapt_*
};
// bridge_count_nodes is a ggml eval callback (cb_eval) that counts nodes
// into the bridge_graph_stats passed as user data.
bool bridge_count_nodes(struct ggml_tensor * t, bool ask, void * user_data);

// bridge_tensor_f32 copies the model tensor `name` into `dst` as float32,
// dequantising as needed. With dst NULL it only reports the shape: ne[4]
// receives the dimensions (ne0 first) and the return value is the element
// count, or -1 when there is no such tensor or its type cannot be converted.
int64_t bridge_tensor_f32(const struct llama_model * model, const char * name, float * dst, int64_t n, int64_t ne[4], char ** err);

#ifdef __cplusplus
}
#endif
