# noisekit: `make demo` and `make test` work from a fresh clone (they create .venv and install first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the builds this kind of machine carries on disk (pip finds them there).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-slow style clean

$(BIN)/noisekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/noisekit

install: $(BIN)/noisekit

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/noisekit demo --output_dir outputs/demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# End-to-end shapes-world runs across processes (a few minutes); CI runs them after `make test`.
test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

style: install
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check noisekit pipelines training tests benchmarks

clean:
	rm -rf $(VENV) outputs
