# Two entry points for a fresh machine: `make demo` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install demo test clean lock

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages. constraints.txt holds every other
# package at the version CI tested, so a new release of an indirect dependency cannot break a fresh install.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

# Writes constraints.txt again from a fresh install of pyproject.toml's pins (after changing them); the local
# version label of a CPU-only torch wheel (+cpu) is dropped, so the constraint holds for any torch 2.13.0 build.
lock:
	tmp=$$(mktemp -d) && $(PYTHON) -m venv $$tmp && $$tmp/bin/pip install --quiet torch==2.13.0 \
	&& $$tmp/bin/pip install --quiet ".[test]" \
	&& { sed -n '1,2p' constraints.txt; $$tmp/bin/pip freeze --exclude headstart | sed 's/+cpu$$//'; } > $$tmp/lock \
	&& mv $$tmp/lock constraints.txt && rm -rf $$tmp

# The demo caps the default configs so that both runs, with their evaluation reports, finish in about 8 minutes on
# 2 cores (9 with the installation); ELPV runs at 224 px instead of 300.
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
