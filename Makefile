# sdlua — Stable Diffusion in C and Lua.
#   make deps        install the Debian packages the project needs (as root)
#   make             build bin/sdlua and lib/sd/core.so
#   make test        C and Lua tests, golden tests against $(SDLUA_REFERENCE)
#   make test-asan   the same tests built with AddressSanitizer + UBSan
#   make fuzz        libFuzzer harnesses (clang), FUZZ_SECONDS each
#   make bench       kernel GFLOP/s as ratios to cblas_sgemm in the same run

CC      ?= cc
BUILD   ?= build
BIN     ?= bin
SAN     ?= 0
OPT     ?= -O2 -g
WERROR  ?= -Werror

LUA_INC  ?= /usr/include/lua5.4
BLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB ?= /usr/lib/x86_64-linux-gnu/openblas-openmp

DEB_PACKAGES = build-essential clang lua5.4 liblua5.4-dev libopenblas-openmp-dev libsleef-dev \
  libstb-dev libedit-dev zlib1g-dev lua-cjson lua-argparse libzmq3-dev pkg-config \
  jupyter-notebook jupyter-nbconvert jupyter-client python3-nbclient python3-jupyter-client

CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(OPT) -Wall -Wextra $(WERROR) \
  -Iruntime -Ikernels -I$(LUA_INC) -I$(BLAS_INC) -I/usr/include/stb $(CFLAGS)
LDLIBS_ALL = -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lsleef -lstb -lz -lm -fopenmp -lzmq $(LDLIBS)

ifeq ($(SAN),1)
  BUILD := build-asan
  BIN   := build-asan/bin
  CFLAGS_ALL += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDLIBS_ALL += -fsanitize=address,undefined
endif

# Files named *_avx512.c / *_avx2.c hold ISA-specific code chosen at run time (runtime/cpu.c).
ISA_avx512 = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vnni -mavx2 -mfma -mf16c
ISA_avx2   = -mavx2 -mfma -mf16c
isa_flags  = $(if $(findstring _avx512.c,$1),$(ISA_avx512),$(if $(findstring _avx2.c,$1),$(ISA_avx2),))

MAIN_SRC = runtime/lsdlua.c
CORE_SRC = $(filter-out $(MAIN_SRC),$(wildcard runtime/*.c kernels/*.c))
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
CTEST_SRC = $(wildcard tests/c/test_*.c)
CTEST_BIN = $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
HDRS = $(wildcard runtime/*.h kernels/*.h)

SDLUA = $(BIN)/sdlua
export SDLUA_REFERENCE ?= $(abspath ../shared/reference)

.PHONY: all deps test test-c test-lua test-asan fuzz bench clean
all: $(SDLUA) lib/sd/core.so

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(call isa_flags,$<) -c $< -o $@

$(BUILD)/libsdcore.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SDLUA): $(BUILD)/$(MAIN_SRC:.c=.o) $(BUILD)/libsdcore.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ -llua5.4 -ledit $(LDLIBS_ALL)

# The same core as a Lua C module, for a plain lua5.4 (see docs/getting-started.md).
lib/sd/core.so: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h tests/c/bench.h $(BUILD)/libsdcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/c -o $@ $< $(BUILD)/libsdcore.a -llua5.4 $(LDLIBS_ALL)

# Every test prints "ok - name", "not ok - name" or "skip - name: why"; tests/tally sums them
# and ends with "N passed, N failed".
test: $(SDLUA) $(CTEST_BIN)
	@tests/run-all $(BUILD) $(SDLUA)

test-asan:
	$(MAKE) SAN=1 test

FUZZ_SECONDS ?= 60
fuzz:
	@tests/fuzz/run $(FUZZ_SECONDS)

bench: $(SDLUA) $(BUILD)/tests/bench_kernels
	$(BUILD)/tests/bench_kernels

$(BUILD)/tests/bench_kernels: tests/c/bench_kernels.c tests/c/bench.h $(BUILD)/libsdcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/c -o $@ $< $(BUILD)/libsdcore.a -llua5.4 $(LDLIBS_ALL)

clean:
	rm -rf build build-asan bin lib

# ---- Jupyter kernel and notebooks (docs/notebooks.md) ------------------------------------------
# install-kernel registers the sdlua kernel (this tree's bin/sdlua) with the Jupyter of Debian's
# jupyter-notebook / jupyter-nbconvert packages; KERNEL_FLAGS=--sys-prefix (or --prefix=...)
# installs it elsewhere than the user's own Jupyter folder.
KERNEL_FLAGS ?= --user
.PHONY: install-kernel notebooks-check notebooks-update
install-kernel: $(SDLUA)
	$(SDLUA) lua/sd/jupyter/notebooks.lua kernelspec $(BUILD)/kernelspec/sdlua
	jupyter kernelspec install $(KERNEL_FLAGS) --replace --name sdlua $(BUILD)/kernelspec/sdlua
	@jupyter kernelspec list | grep -w sdlua

# notebooks-check re-executes notebooks with `jupyter nbconvert --execute` on the sdlua kernel and
# fails when any output differs from the one stored (images byte for byte). CI runs the notebooks
# that need only the tiny reference models ($(SDLUA_REFERENCE)/tiny-sd1): all six of examples/.
# SDLUA_MODEL and SDLUA_NOTEBOOK_SIZE are unset for the run (the stored outputs are the tiny
# model's). The kernel runs with 2 threads and the AVX2 kernels, so the outputs depend only on
# OpenBLAS's choice of sgemm kernel for the CPU (docs/notebooks.md). NOTEBOOKS=... checks others;
# notebooks-update stores fresh outputs (after a change that moves results on purpose).
NOTEBOOKS_CI = examples/01-tensors-and-kernels.ipynb examples/02-tokenizer-and-text-encoder.ipynb \
  examples/03-schedulers.ipynb examples/04-your-own-sampler.ipynb examples/05-txt2img.ipynb \
  examples/06-img2img.ipynb
NOTEBOOKS ?= $(NOTEBOOKS_CI)
notebooks-check: $(SDLUA)
	env -u SDLUA_MODEL -u SDLUA_NOTEBOOK_SIZE $(SDLUA) lua/sd/jupyter/notebooks.lua check $(NOTEBOOKS)

notebooks-update: $(SDLUA)
	env -u SDLUA_MODEL -u SDLUA_NOTEBOOK_SIZE $(SDLUA) lua/sd/jupyter/notebooks.lua check --update $(NOTEBOOKS)

# ---- whole-pipeline benchmark (docs/performance.md, "make bench-sd") ----------------------------
# Writes the SD 1.5 stand-in once (build/bench/sd15-f16.safetensors, random f16 weights), then
# measures txt2img at 512x512 and 256x256 with CFG, the f32-weight peak and a tiled 1024x1024
# decode, each in a process of its own; prints one table and keeps it in docs/performance.md.
# BENCH_SD_FLAGS=--quick skips the f32 and 1024x1024 runs; --no-docs leaves the docs alone.
BENCH_SD_FLAGS ?=
.PHONY: bench-sd
bench-sd: $(SDLUA)
	$(SDLUA) lua/sd/bench.lua $(BENCH_SD_FLAGS)
