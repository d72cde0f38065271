# Two entry points for a fresh machine: `make demo` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install demo test clean

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The demo caps the default configs so that both runs, with their evaluation reports, finish in about 11 minutes on
# 2 cores; ELPV runs at 224 px instead of 300.
DEMO_EVALUATE := --set evaluate.robustness_examples=200
DEMO_ELPV ?= --set data.image_size=224 --set train.max_epochs=6 --set 'strategy.unfreeze=[3,5]' --set train.cache_views=2 $(DEMO_EVALUATE)
DEMO_BBC ?= --set train.max_epochs=6 --set 'strategy.unfreeze=[3,5]' --set data.max_length=128 $(DEMO_EVALUATE)

# Fine-tunes EfficientNet-Lite0 on ELPV solar cells and MiniLM on BBC News, then prints their test metrics.
demo: install
	$(BIN)/headstart fit configs/elpv.yaml --overwrite $(DEMO_ELPV)
	$(BIN)/headstart fit configs/bbc.yaml --overwrite $(DEMO_BBC)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
