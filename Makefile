# Every target creates .venv on first use (torch/torchvision pinned to the
# builds that install from this machine's disk; ranges live in setup.cfg).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo docs bench bench-quick lint clean weights

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1 -e ".[test,docs]"
	# Real pretrained weights that ship inside PyPI wheels (all MIT): the face
	# DCGAN (gan-face-generate), MTCNN's face detectors (facenet-pytorch) and
	# an MNIST CNN (ccexam). Their declared dependencies (wandb, old torch and
	# numpy pins) are not needed, so they are installed without them.
	$(VENV)/bin/pip install --no-deps gan-face-generate==1.1.1 \
		facenet-pytorch==2.6.0 ccexam==1.0.0
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/captum-inverseset demo --out report --overwrite

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-quick: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check captum_inverseset tests benchmarks tutorials

weights: $(STAMP)
	$(PY) -m captum_inverseset.zoo.train

clean:
	rm -rf docs/_build docs/auto_tutorials docs/gen_modules report
