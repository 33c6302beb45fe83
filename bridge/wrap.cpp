// Implementation of wrap.h. See there for the contract.
#include "wrap.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"

// Declared in llama.cpp's src/llama-model.h (exported for tools).
const std::vector<std::pair<std::string, struct ggml_tensor *>> & llama_internal_get_tensor_map(const struct llama_model * model);

namespace {

bool g_verbose = false;
std::once_flag g_init_once;

// Errors logged by llama.cpp during the current bridge call on this thread.
thread_local std::string t_errors;
thread_local bool t_capturing = false;

void log_handler(enum ggml_log_level level, const char * text, void *) {
    if (t_capturing && (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN)) {
        t_errors += text;
    }
    if (g_verbose || level == GGML_LOG_LEVEL_ERROR) {
        if (!t_capturing || g_verbose) {
            fputs(text, stderr);
        }
    }
}

// capture collects llama.cpp's error log lines for one call.
struct capture {
    capture() { t_errors.clear(); t_capturing = true; }
    ~capture() { t_capturing = false; }
    // fail stores the message (the given text, then what was logged) in *err.
    void fail(char ** err, const std::string & what) {
        std::string msg = what;
        std::string logged = t_errors;
        while (!logged.empty() && (logged.back() == '\n' || logged.back() == ' ')) logged.pop_back();
        if (!logged.empty()) {
            for (auto & c : logged) if (c == '\n') c = ';';
            msg += ": " + logged;
        }
        if (err) *err = strdup(msg.c_str());
    }
};

} // namespace

extern "C" {

void bridge_init(void) {
    std::call_once(g_init_once, [] {
        llama_log_set(log_handler, nullptr);
        llama_backend_init();
    });
}

void bridge_set_verbose(bool on) { g_verbose = on; }

struct llama_model * bridge_model_load(const char * path, bool use_mmap, bool vocab_only, bool repack, char ** err) {
    capture c;
    try {
        llama_model_params p = llama_model_default_params();
        p.use_mmap = use_mmap;
        p.vocab_only = vocab_only;
        p.use_extra_bufts = repack;
        p.n_gpu_layers = 0;
        llama_model * m = llama_model_load_from_file(path, p);
        if (!m) c.fail(err, "llama.cpp could not load the model");
        return m;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return nullptr;
}

struct llama_context * bridge_context_new(struct llama_model * model, struct llama_context_params p, char ** err) {
    capture c;
    try {
        llama_context * ctx = llama_init_from_model(model, p);
        if (!ctx) c.fail(err, "llama.cpp could not create the context");
        return ctx;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return nullptr;
}

int32_t bridge_decode(struct llama_context * ctx, struct llama_batch batch, char ** err) {
    capture c;
    try {
        int32_t rc = llama_decode(ctx, batch);
        if (rc != 0) {
            std::string what;
            switch (rc) {
                case 1: what = "no KV cache slot for the batch (context full)"; break;
                case 2: what = "decode aborted"; break;
                case -1: what = "invalid batch"; break;
                default: what = "decode failed with code " + std::to_string(rc); break;
            }
            c.fail(err, what);
        }
        return rc;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return -3;
}

struct llama_adapter_lora * bridge_lora_load(struct llama_model * model, const char * path, char ** err) {
    capture c;
    try {
        llama_adapter_lora * a = llama_adapter_lora_init(model, path);
        if (!a) c.fail(err, "llama.cpp could not load the LoRA adapter");
        return a;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return nullptr;
}

bool bridge_quantize(const char * in, const char * out, int ftype, int nthread, char ** err) {
    capture c;
    try {
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.ftype = (enum llama_ftype) ftype;
        p.nthread = nthread;
        if (llama_model_quantize(in, out, &p) != 0) {
            c.fail(err, "llama.cpp could not quantize the model");
            return false;
        }
        return true;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return false;
}

int32_t bridge_chat_apply(const char * tmpl, const char ** roles, const char ** contents, size_t n,
                          bool add_ass, char * buf, int32_t len, char ** err) {
    capture c;
    try {
        std::vector<llama_chat_message> msgs(n);
        for (size_t i = 0; i < n; i++) msgs[i] = { roles[i], contents[i] };
        int32_t rc = llama_chat_apply_template(tmpl, msgs.data(), n, add_ass, buf, len);
        if (rc < 0) c.fail(err, "the chat template is not one llama.cpp supports");
        return rc;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return -1;
}

bool bridge_count_nodes(struct ggml_tensor * t, bool ask, void * user_data) {
    if (ask) {
        auto * st = (bridge_graph_stats *) user_data;
        st->nodes++;
        if (strncmp(ggml_get_name(t), "iapt_", 5) == 0) st->iapt_nodes++;
    }
    return false;
}

int64_t bridge_tensor_f32(const struct llama_model * model, const char * name, float * dst, int64_t n, int64_t ne[4], char ** err) {
    capture c;
    try {
        const ggml_tensor * t = nullptr;
        for (const auto & kv : llama_internal_get_tensor_map(model)) {
            if (kv.first == name) { t = kv.second; break; }
        }
        if (!t) { c.fail(err, std::string("no tensor named ") + name); return -1; }
        const auto * traits = ggml_get_type_traits(t->type);
        if (t->type != GGML_TYPE_F32 && !traits->to_float) {
            c.fail(err, std::string("tensor ") + name + " has type " + ggml_type_name(t->type) + ", which cannot be converted to F32");
            return -1;
        }
        for (int i = 0; i < 4; i++) ne[i] = t->ne[i];
        const int64_t count = ggml_nelements(t);
        if (!dst) return count;
        if (n != count) { c.fail(err, "destination size does not match the tensor"); return -1; }
        if (!ggml_is_contiguous(t)) { c.fail(err, std::string("tensor ") + name + " is not contiguous"); return -1; }
        std::vector<uint8_t> raw(ggml_nbytes(t));
        ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
        if (t->type == GGML_TYPE_F32) {
            memcpy(dst, raw.data(), raw.size());
        } else {
            const int64_t row = t->ne[0];
            const size_t row_bytes = ggml_row_size(t->type, row);
            for (int64_t r = 0; r < count / row; r++) {
                traits->to_float(raw.data() + r * row_bytes, dst + r * row, row);
            }
        }
        return count;
    } catch (const std::exception & e) {
        c.fail(err, e.what());
    }
    return -1;
}

} // extern "C"
