// IAPT plugin for llama.cpp: adapter loading and validation, the generator
// subgraph, and the C API of iapt.h. The math follows shared/IAPT-SPEC.md.
#include "iapt.h"
#include "iapt-graph.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "gguf.h"
#include "llama-arch.h"
#include "llama-context.h"
#include "llama-graph.h"
#include "llama-model.h"

// One layer's generator. With share = "updown", down/up point at the shared
// tensors in every layer.
struct iapt_layer {
    ggml_tensor * down_w  = nullptr; // [d, r]
    ggml_tensor * down_b  = nullptr; // [r]
    ggml_tensor * pool_w  = nullptr; // [r, m]
    ggml_tensor * rat_num = nullptr; // [6]  a0..a5
    ggml_tensor * rat_den = nullptr; // [4]  b1..b4
    ggml_tensor * up_w    = nullptr; // [r, d]
    ggml_tensor * up_b    = nullptr; // [d]
};

struct llama_iapt_adapter {
    std::string path;
    const llama_model * model = nullptr;
    uint32_t m = 0, r = 0;
    bool share_updown = false;
    uint64_t n_params = 0;
    std::map<std::string, std::string> meta_str;
    std::vector<iapt_layer> layers;
    std::vector<ggml_context_ptr> ctxs;
    std::vector<ggml_backend_buffer_ptr> bufs;
};

namespace {

// iapt_error is thrown inside the plugin and turned into *err at the C API.
struct iapt_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string fmt(const char * f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char * f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

void set_err(char ** err, const std::string & msg) {
    if (err) *err = strdup(msg.c_str());
}

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; i++) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

// gguf_reader wraps the metadata context of one file with typed, checked
// accessors (gguf's own getters abort on a type mismatch).
struct gguf_reader {
    const std::string & path;
    gguf_context * ctx;

    int64_t key(const char * k) const {
        const int64_t id = gguf_find_key(ctx, k);
        if (id < 0) throw iapt_error(fmt("%s: metadata key %s is missing", path.c_str(), k));
        return id;
    }
    std::string str(const char * k) const {
        const int64_t id = key(k);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_STRING) {
            throw iapt_error(fmt("%s: metadata %s has type %s, want string", path.c_str(), k, gguf_type_name(gguf_get_kv_type(ctx, id))));
        }
        return gguf_get_val_str(ctx, id);
    }
    static size_t int_size(gguf_type t) {
        switch (t) {
            case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: return 1;
            case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
            case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: return 4;
            default: return 8;
        }
    }
    static bool as_u64(gguf_type t, const void * p, uint64_t & out) {
        switch (t) {
            case GGUF_TYPE_UINT8:  out = *(const uint8_t  *) p; return true;
            case GGUF_TYPE_UINT16: out = *(const uint16_t *) p; return true;
            case GGUF_TYPE_UINT32: out = *(const uint32_t *) p; return true;
            case GGUF_TYPE_UINT64: out = *(const uint64_t *) p; return true;
            case GGUF_TYPE_INT8:   if (*(const int8_t  *) p < 0) return false; out = *(const int8_t  *) p; return true;
            case GGUF_TYPE_INT16:  if (*(const int16_t *) p < 0) return false; out = *(const int16_t *) p; return true;
            case GGUF_TYPE_INT32:  if (*(const int32_t *) p < 0) return false; out = *(const int32_t *) p; return true;
            case GGUF_TYPE_INT64:  if (*(const int64_t *) p < 0) return false; out = *(const int64_t *) p; return true;
            default: return false;
        }
    }
    uint32_t u32(const char * k) const {
        const int64_t id = key(k);
        const gguf_type t = gguf_get_kv_type(ctx, id);
        uint64_t v = 0;
        if (t == GGUF_TYPE_ARRAY || t == GGUF_TYPE_STRING || !as_u64(t, gguf_get_val_data(ctx, id), v) || v > UINT32_MAX) {
            throw iapt_error(fmt("%s: metadata %s must be an unsigned 32-bit integer (type %s)", path.c_str(), k, gguf_type_name(t)));
        }
        return (uint32_t) v;
    }
    std::vector<uint64_t> uarr(const char * k) const {
        const int64_t id = key(k);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_ARRAY) {
            throw iapt_error(fmt("%s: metadata %s must be an array of integers", path.c_str(), k));
        }
        const gguf_type et = gguf_get_arr_type(ctx, id);
        if (et == GGUF_TYPE_STRING || et == GGUF_TYPE_ARRAY) {
            throw iapt_error(fmt("%s: metadata %s must be an array of integers, not of %s", path.c_str(), k, gguf_type_name(et)));
        }
        const size_t n = gguf_get_arr_n(ctx, id);
        const auto * data = (const uint8_t *) gguf_get_arr_data(ctx, id);
        const size_t es = int_size(et);
        std::vector<uint64_t> out(n);
        for (size_t i = 0; i < n; i++) {
            if (!as_u64(et, data + i * es, out[i])) {
                throw iapt_error(fmt("%s: metadata %s[%zu] is not a non-negative integer", path.c_str(), k, i));
            }
        }
        return out;
    }
};

// Expected tensor: where to store it and its shape.
struct want_tensor {
    ggml_tensor ** slot;
    int64_t ne[2];
    int n_dims;
    int layer; // -1: shared
};

void load(llama_iapt_adapter & a, const llama_model & model, const std::string & path) {
    const auto & hp = model.hparams;
    if (model.arch != LLM_ARCH_LLAMA) {
        throw iapt_error(fmt("%s: IAPT supports base models of architecture llama only; this model is %s",
                             path.c_str(), llm_arch_name(model.arch)));
    }

    ggml_context * meta_raw = nullptr;
    gguf_init_params gp = { /*.no_alloc =*/ true, /*.ctx =*/ &meta_raw };
    gguf_context_ptr gctx(gguf_init_from_file(path.c_str(), gp));
    if (!gctx) {
        throw iapt_error(fmt("%s: not a readable GGUF file (missing, truncated or corrupt header)", path.c_str()));
    }
    ggml_context_ptr meta(meta_raw);
    gguf_reader rd{path, gctx.get()};

    // adapter.type first: a LoRA file gets a clear answer.
    const std::string type = rd.str("adapter.type");
    if (type != "iapt") {
        throw iapt_error(fmt("%s: adapter.type is \"%s\", not \"iapt\"%s", path.c_str(), type.c_str(),
                             type == "lora" ? " (a LoRA adapter: load it as LoRA)" : ""));
    }
    if (gguf_find_key(gctx.get(), "general.type") >= 0 && rd.str("general.type") != "adapter") {
        throw iapt_error(fmt("%s: general.type is \"%s\", not \"adapter\"", path.c_str(), rd.str("general.type").c_str()));
    }
    const std::string arch = rd.str("general.architecture");
    if (arch != llm_arch_name(model.arch)) {
        throw iapt_error(fmt("%s: adapter is for architecture %s, the base model is %s", path.c_str(), arch.c_str(), llm_arch_name(model.arch)));
    }
    const uint32_t d = rd.u32("adapter.iapt.embedding_length");
    if (d != hp.n_embd) {
        throw iapt_error(fmt("%s: adapter.iapt.embedding_length is %u, the base model's width is %u", path.c_str(), d, hp.n_embd));
    }
    const uint32_t L = rd.u32("adapter.iapt.layer_count");
    if (L != hp.n_layer) {
        throw iapt_error(fmt("%s: adapter.iapt.layer_count is %u, the base model has %u layers", path.c_str(), L, hp.n_layer));
    }
    a.m = rd.u32("adapter.iapt.soft_tokens");
    if (a.m < 1 || a.m > 256) throw iapt_error(fmt("%s: adapter.iapt.soft_tokens is %u, want 1..256", path.c_str(), a.m));
    a.r = rd.u32("adapter.iapt.bottleneck");
    if (a.r < 1 || a.r > 65536) throw iapt_error(fmt("%s: adapter.iapt.bottleneck is %u, want 1..65536", path.c_str(), a.r));
    const std::string share = rd.str("adapter.iapt.share");
    if (share != "none" && share != "updown") {
        throw iapt_error(fmt("%s: adapter.iapt.share is \"%s\", want \"none\" or \"updown\"", path.c_str(), share.c_str()));
    }
    a.share_updown = share == "updown";
    const std::string rv = rd.str("adapter.iapt.rational.version");
    if (rv != "B") throw iapt_error(fmt("%s: adapter.iapt.rational.version is \"%s\", only \"B\" is supported", path.c_str(), rv.c_str()));
    const auto deg = rd.uarr("adapter.iapt.rational.degrees");
    if (deg.size() != 2 || deg[0] != 5 || deg[1] != 4) {
        throw iapt_error(fmt("%s: adapter.iapt.rational.degrees must be [5, 4]", path.c_str()));
    }
    for (int64_t i = 0; i < gguf_get_n_kv(gctx.get()); i++) {
        if (gguf_get_kv_type(gctx.get(), i) == GGUF_TYPE_STRING) {
            a.meta_str[gguf_get_key(gctx.get(), i)] = gguf_get_val_str(gctx.get(), i);
        }
    }

    // The tensors the spec asks for, and nothing else.
    const int64_t m = a.m, r = a.r;
    a.layers.assign(L, iapt_layer{});
    std::map<std::string, want_tensor> want;
    iapt_layer shared;
    auto add = [&](const std::string & name, ggml_tensor ** slot, int64_t ne0, int64_t ne1, int n_dims, int layer) {
        want[name] = want_tensor{slot, {ne0, ne1}, n_dims, layer};
    };
    if (a.share_updown) {
        add("iapt_down.weight", &shared.down_w, d, r, 2, -1);
        add("iapt_down.bias",   &shared.down_b, r, 1, 1, -1);
        add("iapt_up.weight",   &shared.up_w,   r, d, 2, -1);
        add("iapt_up.bias",     &shared.up_b,   d, 1, 1, -1);
    }
    for (uint32_t il = 0; il < L; il++) {
        const std::string p = "blk." + std::to_string(il) + ".";
        iapt_layer & ly = a.layers[il];
        if (!a.share_updown) {
            add(p + "iapt_down.weight", &ly.down_w, d, r, 2, il);
            add(p + "iapt_down.bias",   &ly.down_b, r, 1, 1, il);
            add(p + "iapt_up.weight",   &ly.up_w,   r, d, 2, il);
            add(p + "iapt_up.bias",     &ly.up_b,   d, 1, 1, il);
        }
        add(p + "iapt_pool.weight", &ly.pool_w,  r, m, 2, il);
        add(p + "iapt_rat_num",     &ly.rat_num, 6, 1, 1, il);
        add(p + "iapt_rat_den",     &ly.rat_den, 4, 1, 1, il);
    }
    const int64_t n_tensors = gguf_get_n_tensors(gctx.get());
    for (int64_t i = 0; i < n_tensors; i++) {
        const char * name = gguf_get_tensor_name(gctx.get(), i);
        if (!want.count(name)) {
            throw iapt_error(fmt("%s: unknown tensor %s for share = %s, m = %u, r = %u", path.c_str(), name, share.c_str(), a.m, a.r));
        }
    }

    // One ggml context per buffer type, tensors placed like llama.cpp places
    // control vectors: per layer on the buffer type of the layer's device
    // (shared tensors with layer 0). Not llama_model::select_buft: it leaks
    // a probe buffer per call in this llama.cpp version.
    std::map<ggml_backend_buffer_type_t, ggml_context *> ctx_map;
    auto ctx_for = [&](int layer) {
        ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(model.dev_layer(layer < 0 ? 0 : layer));
        auto it = ctx_map.find(buft);
        if (it != ctx_map.end()) return it->second;
        ggml_init_params ip = { want.size() * ggml_tensor_overhead(), nullptr, true };
        ggml_context * c = ggml_init(ip);
        if (!c) throw iapt_error(fmt("%s: out of memory for tensor metadata", path.c_str()));
        a.ctxs.emplace_back(c);
        ctx_map[buft] = c;
        return c;
    };
    std::vector<std::pair<ggml_tensor *, int64_t>> to_read; // tensor, gguf id
    for (auto & [name, w] : want) {
        const int64_t id = gguf_find_tensor(gctx.get(), name.c_str());
        if (id < 0) throw iapt_error(fmt("%s: tensor %s is missing", path.c_str(), name.c_str()));
        const ggml_tensor * src = ggml_get_tensor(meta.get(), name.c_str());
        if (src->type != GGML_TYPE_F32) {
            throw iapt_error(fmt("%s: tensor %s has type %s, want f32", path.c_str(), name.c_str(), ggml_type_name(src->type)));
        }
        const int64_t want_ne[4] = { w.ne[0], w.ne[1], 1, 1 };
        if (src->ne[0] != want_ne[0] || src->ne[1] != want_ne[1] || src->ne[2] != 1 || src->ne[3] != 1) {
            throw iapt_error(fmt("%s: tensor %s has shape %s, want %s", path.c_str(), name.c_str(),
                                 shape_str(src->ne, ggml_n_dims(src)).c_str(), shape_str(want_ne, w.n_dims).c_str()));
        }
        ggml_context * c = ctx_for(w.layer);
        ggml_tensor * t = w.n_dims == 1 ? ggml_new_tensor_1d(c, GGML_TYPE_F32, w.ne[0])
                                        : ggml_new_tensor_2d(c, GGML_TYPE_F32, w.ne[0], w.ne[1]);
        ggml_set_name(t, name.c_str());
        *w.slot = t;
        to_read.emplace_back(t, id);
        a.n_params += ggml_nelements(t);
    }
    for (auto & [buft, c] : ctx_map) {
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(c, buft);
        if (!buf) throw iapt_error(fmt("%s: could not allocate the adapter's buffer", path.c_str()));
        a.bufs.emplace_back(buf);
    }

    // Data: read, check finite, upload.
    std::unique_ptr<FILE, int (*)(FILE *)> f(fopen(path.c_str(), "rb"), fclose);
    if (!f) throw iapt_error(fmt("%s: cannot open for reading", path.c_str()));
    const size_t data_off = gguf_get_data_offset(gctx.get());
    std::vector<float> buf;
    for (auto & [t, id] : to_read) {
        const size_t off = data_off + gguf_get_tensor_offset(gctx.get(), id);
        buf.resize(ggml_nelements(t));
        if (fseek(f.get(), (long) off, SEEK_SET) != 0 || fread(buf.data(), sizeof(float), buf.size(), f.get()) != buf.size()) {
            throw iapt_error(fmt("%s: tensor %s: data ends past the end of the file (truncated)", path.c_str(), ggml_get_name(t)));
        }
        for (size_t i = 0; i < buf.size(); i++) {
            if (!std::isfinite(buf[i])) {
                throw iapt_error(fmt("%s: tensor %s holds a non-finite value (%g) at element %zu", path.c_str(), ggml_get_name(t), buf[i], i));
            }
        }
        ggml_backend_tensor_set(t, buf.data(), 0, ggml_nbytes(t));
    }
    if (a.share_updown) {
        for (auto & ly : a.layers) {
            ly.down_w = shared.down_w; ly.down_b = shared.down_b;
            ly.up_w = shared.up_w;     ly.up_b = shared.up_b;
        }
    }
    a.path = path;
    a.model = &model;
}

// rational computes the spec's Padé unit (version B, degrees 5/4):
// (a0 + a1 x + ... + a5 x^5) / (1 + |b1 x + ... + b4 x^4|), by Horner.
ggml_tensor * rational(const llm_graph_context & g, ggml_tensor * x, const iapt_layer & ly, int il) {
    ggml_context * ctx = g.ctx0;
    auto coef = [&](ggml_tensor * t, int i) { return ggml_view_1d(ctx, t, 1, i * sizeof(float)); };
    ggml_tensor * num = ggml_mul(ctx, x, coef(ly.rat_num, 5));
    for (int i = 4; i >= 1; i--) {
        num = ggml_mul(ctx, ggml_add(ctx, num, coef(ly.rat_num, i)), x);
    }
    num = ggml_add(ctx, num, coef(ly.rat_num, 0));
    ggml_tensor * den = ggml_mul(ctx, x, coef(ly.rat_den, 3));
    for (int i = 2; i >= 0; i--) {
        den = ggml_mul(ctx, ggml_add(ctx, den, coef(ly.rat_den, i)), x);
    }
    den = ggml_scale_bias(ctx, ggml_abs(ctx, den), 1.0f, 1.0f);
    ggml_tensor * out = ggml_div(ctx, num, den);
    g.cb(out, "iapt_rational", il);
    return out;
}

} // namespace

ggml_tensor * llama_iapt_layer_input(const llm_graph_context & g, ggml_tensor * inpL, int il) {
    const llama_iapt_adapter * a = g.iapt;
    if (!a) {
        return inpL;
    }
    const int64_t d = inpL->ne[0];
    const int64_t T = inpL->ne[1];
    const int64_t m = a->m;
    const int64_t n = T - m;
    if (n < 1) {
        // Only reachable through a graph reservation: iapt_decode_prefill
        // refuses such batches. Leave the rows as they are.
        return inpL;
    }
    ggml_context * ctx = g.ctx0;
    const iapt_layer & ly = a->layers[il];

    // H = X[m : m+n] (the instruction rows), contiguous in memory.
    ggml_tensor * H = ggml_view_2d(ctx, inpL, d, n, inpL->nb[1], m * inpL->nb[1]);
    // Z = H·Wdown + bdown                                   [r, n]
    ggml_tensor * Z = ggml_add(ctx, ggml_mul_mat(ctx, ly.down_w, H), ly.down_b);
    g.cb(Z, "iapt_z", il);
    // S = Z·Wpool, softmax over the n rows for each soft token: A [n, m]
    ggml_tensor * S = ggml_mul_mat(ctx, ly.pool_w, Z);                 // [m, n]
    ggml_tensor * A = ggml_soft_max(ctx, ggml_cont(ctx, ggml_transpose(ctx, S))); // [n, m]
    g.cb(A, "iapt_attn", il);
    // P = Aᵀ·Z                                              [r, m]
    ggml_tensor * P = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_transpose(ctx, Z)), A);
    // U = rational(P)·Wup + bup                             [d, m]
    ggml_tensor * U = ggml_add(ctx, ggml_mul_mat(ctx, ly.up_w, rational(g, P, ly, il)), ly.up_b);
    g.cb(U, "iapt_soft", il);
    // X[0 : m] = U
    ggml_tensor * out = ggml_concat(ctx, U, H, 1);
    g.cb(out, "iapt_layer_input", il);
    return out;
}

extern "C" {

struct llama_iapt_adapter * iapt_adapter_load(const struct llama_model * model, const char * path, char ** err) {
    if (!model || !path) {
        set_err(err, "iapt_adapter_load: null model or path");
        return nullptr;
    }
    auto a = std::make_unique<llama_iapt_adapter>();
    try {
        load(*a, *model, path);
    } catch (const iapt_error & e) {
        set_err(err, e.what());
        return nullptr;
    } catch (const std::exception & e) {
        set_err(err, std::string(path) + ": " + e.what());
        return nullptr;
    }
    return a.release();
}

void iapt_adapter_free(struct llama_iapt_adapter * adapter) { delete adapter; }

uint32_t iapt_adapter_n_soft(const struct llama_iapt_adapter * a) { return a ? a->m : 0; }
uint32_t iapt_adapter_bottleneck(const struct llama_iapt_adapter * a) { return a ? a->r : 0; }
bool iapt_adapter_share_updown(const struct llama_iapt_adapter * a) { return a && a->share_updown; }
uint64_t iapt_adapter_n_params(const struct llama_iapt_adapter * a) { return a ? a->n_params : 0; }

int32_t iapt_adapter_meta_str(const struct llama_iapt_adapter * a, const char * key, char * buf, size_t buf_size) {
    if (!a || !key) return -1;
    auto it = a->meta_str.find(key);
    if (it == a->meta_str.end()) {
        if (buf && buf_size) buf[0] = 0;
        return -1;
    }
    return snprintf(buf, buf_size, "%s", it->second.c_str());
}

bool iapt_context_set_adapter(struct llama_context * ctx, const struct llama_iapt_adapter * adapter, char ** err) {
    if (!ctx) {
        set_err(err, "iapt: null context");
        return false;
    }
    if (adapter && adapter->model != &ctx->get_model()) {
        set_err(err, fmt("%s: adapter was loaded for another model", adapter->path.c_str()));
        return false;
    }
    ctx->set_iapt(adapter);
    return true;
}

int32_t iapt_decode_prefill(struct llama_context * ctx, const struct llama_iapt_adapter * a, struct llama_batch batch, char ** err) {
    if (!ctx || !a) {
        set_err(err, "iapt prefill: null context or adapter");
        return -1;
    }
    const int32_t n = batch.n_tokens;
    const uint32_t n_ubatch = llama_n_ubatch(ctx);
    if (n <= (int32_t) a->m) {
        set_err(err, fmt("%s: prefill of %d rows has no prompt token after the %u soft-token placeholders", a->path.c_str(), n, a->m));
        return -1;
    }
    if ((uint32_t) n > n_ubatch) {
        set_err(err, fmt("%s: prefill of %d rows (%u placeholders + %d prompt tokens) does not fit one ubatch of %u; "
                         "the instruction would be pooled in parts. Raise n_ubatch or shorten the prompt",
                         a->path.c_str(), n, a->m, n - (int32_t) a->m, n_ubatch));
        return -1;
    }
    if (!batch.token || !batch.pos || !batch.seq_id || !batch.n_seq_id) {
        set_err(err, "iapt prefill: the batch needs tokens, positions and sequence ids");
        return -1;
    }
    const llama_seq_id seq = batch.seq_id[0][0];
    for (int32_t i = 0; i < n; i++) {
        if (batch.pos[i] != i || batch.n_seq_id[i] != 1 || batch.seq_id[i][0] != seq) {
            set_err(err, fmt("%s: prefill batch must be one sequence at positions 0..%d; row %d has position %d in %d sequence(s)",
                             a->path.c_str(), n - 1, i, batch.pos[i], batch.n_seq_id[i]));
            return -1;
        }
    }
    llama_memory_t mem = llama_get_memory(ctx);
    if (llama_memory_seq_pos_max(mem, seq) >= 0) {
        set_err(err, fmt("%s: sequence %d already holds tokens; a prefill starts an empty sequence", a->path.c_str(), seq));
        return -1;
    }
    try {
        ctx->set_iapt(a);
        const int32_t rc = llama_decode(ctx, batch);
        ctx->set_iapt(nullptr);
        if (rc != 0) set_err(err, fmt("%s: llama_decode failed with code %d", a->path.c_str(), rc));
        return rc;
    } catch (const std::exception & e) {
        ctx->set_iapt(nullptr);
        set_err(err, e.what());
        return -1;
    }
}

} // extern "C"
