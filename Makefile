# Two entry points (see README): `make train` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup train test test-lib test-slow bench clean

setup: $(VENV)/.installed

# Exact versions from constraints.txt (pyproject.toml only has lower bounds), so that CI is reproducible.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	touch $@

# Main job: the thesis's tt-tt-tt network (30,574 parameters) without its last ReLU, trained on MNIST with the
# improved recipe and the default backend (JAX); prints its compression report, test accuracy and the thesis's.
train: setup
	$(BIN)/python -m experiments.train --dataset mnist --model tt-tt-tt-improved $(TRAIN_ARGS)

# Default test run, what CI runs: the library's tests and the experiments' integration tests; slow tests are
# deselected by pyproject's addopts.
test: setup
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# The library's tests only (tt_common, tt_jax, tt_torch, parity_tests): no training, no real data, no CLIs.
test-lib: setup
	$(BIN)/python -m pytest -q -n 2 -m 'not slow and not integration' tt_common tt_jax tt_torch parity_tests $(PYTEST_ARGS)

# Opt-in long runs: large hypothesis profiles and full-data checks.
test-slow: setup
	HYPOTHESIS_PROFILE=slow $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# Benchmarks (writes benchmarks/RESULTS.md); installs the optional TensorLy-Torch and torchTT baselines first
# (torchTT, an sdist, built against the pinned torch: no build isolation, which would fetch an unpinned torch).
bench: setup
	$(BIN)/pip install -q -c constraints.txt --no-build-isolation torchtt ninja
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .hypothesis .pytest_cache *.egg-info
