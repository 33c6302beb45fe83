# Builds the patched llama.cpp tree (laid out by prepare.sh) and the IAPT
# plugin into static libraries, with plain make rules. Invoked by the top
# Makefile once the tree exists, so the wildcards below see its files.
#
#   make -f third_party/llama.mk SRC=build/llama.cpp OUT=build CPU=x86-64-v3

SRC ?= build/llama.cpp
OUT ?= build
CPU ?= x86-64-v3
OPT ?= -O2
include third_party/pin.env

OBJ := $(OUT)/obj
LIB := $(OUT)/lib

ifeq ($(CPU),native)
ARCHFLAGS := -march=native
else
ARCHFLAGS := -march=$(CPU)
endif

DEFS := -DNDEBUG -D_GNU_SOURCE -DGGML_USE_CPU -DGGML_USE_LLAMAFILE -DGGML_USE_CPU_REPACK \
        -DGGML_SCHED_MAX_COPIES=4 -DGGML_VERSION='"$(OLLAMA_VERSION)"' -DGGML_COMMIT='"$(LLAMA_COMMIT)"'
INCS := -I$(SRC)/ggml/include -I$(SRC)/ggml/src -I$(SRC)/ggml/src/ggml-cpu \
        -I$(SRC)/llama/include -I$(SRC)/llama/src -Iplugin
COMMON := $(OPT) $(ARCHFLAGS) -fPIC -pthread -MMD -MP $(DEFS) $(INCS)
CFLAGS_ALL := -std=c11 $(COMMON)
CXXFLAGS_ALL := -std=c++17 $(COMMON)

GGML_SRCS := $(addprefix $(SRC)/ggml/src/,ggml.c ggml.cpp ggml-alloc.c ggml-backend.cpp \
             ggml-backend-reg.cpp ggml-opt.cpp ggml-quants.c ggml-threading.cpp gguf.cpp ollama-debug.c)
CPU_SRCS  := $(wildcard $(SRC)/ggml/src/ggml-cpu/*.c $(SRC)/ggml/src/ggml-cpu/*.cpp) \
             $(SRC)/ggml/src/ggml-cpu/llamafile/sgemm.cpp $(wildcard $(SRC)/ggml/src/ggml-cpu/amx/*.cpp) \
             $(SRC)/ggml/src/ggml-cpu/arch/x86/quants.c $(SRC)/ggml/src/ggml-cpu/arch/x86/repack.cpp
LLAMA_SRCS := $(wildcard $(SRC)/llama/src/*.cpp $(SRC)/llama/src/models/*.cpp)
PLUGIN_SRCS := $(wildcard plugin/*.cpp)

obj = $(patsubst %,$(OBJ)/%.o,$(1))
GGML_OBJS := $(call obj,$(GGML_SRCS))
CPU_OBJS := $(call obj,$(CPU_SRCS))
LLAMA_OBJS := $(call obj,$(LLAMA_SRCS)) $(call obj,$(PLUGIN_SRCS))

all: $(LIB)/libggml.a $(LIB)/libggml-cpu.a $(LIB)/libllama.a

$(LIB)/libggml.a: $(GGML_OBJS)
$(LIB)/libggml-cpu.a: $(CPU_OBJS)
$(LIB)/libllama.a: $(LLAMA_OBJS)
$(LIB)/%.a:
	@mkdir -p $(@D)
	@rm -f $@.tmp
	@echo "AR  $@"
	@ar rcs $@.tmp $^
	@mv $@.tmp $@

# Flags are part of an object's inputs: a change of CPU or OPT rebuilds all.
FLAGS_STAMP := $(OBJ)/flags.$(shell printf '%s' '$(CXXFLAGS_ALL)' | cksum | cut -d' ' -f1)
$(FLAGS_STAMP):
	@mkdir -p $(@D)
	@rm -f $(OBJ)/flags.*
	@touch $@

$(OBJ)/%.c.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	@echo "CC  $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(OBJ)/%.cpp.o: %.cpp $(FLAGS_STAMP)
	@mkdir -p $(@D)
	@echo "CXX $<"
	@$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

.PHONY: all
