# Set-up and entry points. `make demo` and `make test` work on a fresh clone: they create .venv first.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch first, from the CPU wheel: anything that pulls an unpinned torch would fetch the CUDA build.
TORCH  := torch==2.13.0

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(TORCH)
	$(PYTHON) -m pip install --quiet -e ".[pusht,atari,minigrid,metaworld,lora,test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/worldsim demo --model checkpoints/pusht --out outputs/demo

test: install
	$(VENV)/bin/pytest -q

clean:
	rm -rf outputs .pytest_cache
