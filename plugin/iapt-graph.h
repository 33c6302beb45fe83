// IAPT plugin for llama.cpp: the hook that the patched model builders call.
#pragma once

struct ggml_tensor;
struct llm_graph_context;

// llama_iapt_layer_input returns the input of layer il with its first m rows
// replaced by the soft tokens that the switched-on adapter generates from
// the instruction rows (rows m..n-1). With no adapter switched on it returns
// inpL itself and adds no node, so the graph is exactly the base graph.
ggml_tensor * llama_iapt_layer_input(const llm_graph_context & g, ggml_tensor * inpL, int il);
