# Two entry points (see README): `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# pip's per-package byte-compiling is skipped (--no-compile) and done once after the install
# by `compileall -j 0` (all cores, ~25 s): where PYTHONDONTWRITEBYTECODE is set (as on this
# project's machines) no process ever writes a .pyc, so without it every test subprocess, Ray
# worker and Flower ClientApp compiled torch and ray from source again (the suite took 2x).
INSTALL := $(PIP) install --quiet --no-compile

.PHONY: demo test lint bench bench-quick bench-studies mutate clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first where no GPU is present, so the range `torch>=2.3` below does not pull
	# a multi-GB CUDA build. A local CPU wheel is used when the machine has one; otherwise
	# PyTorch's CPU index. With a GPU, the regular (CUDA) build comes from PyPI.
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(INSTALL) "torch>=2.3"; \
	else $(INSTALL) "torch==2.13.0+cpu" 2>/dev/null \
	  || $(INSTALL) "torch>=2.3" --index-url https://download.pytorch.org/whl/cpu; fi
	$(INSTALL) -e ".[dev]"
	@# `|| true`: a few third-party files are for newer Pythons (torch's py312 test helpers).
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null 2>&1 || true
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/autolr demo --out autolr-demo

# Two pytest-xdist workers for CI's two cores. --dist loadgroup hands out one test at a time as
# a worker frees up (no test carries an xdist_group mark; pinning all Ray tests to one worker
# measured slower). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

bench: $(VENV)/.installed
	$(VENV)/bin/autolr bench --out benchmarks/results

# The issue studies (hypergradient, FedHyper, STN, Ray population, Optuna), each into its own folder.
STUDIES ?= hd fedhyper stn ray optuna autolrs replay llm
bench-studies: $(VENV)/.installed
	for s in $(STUDIES); do $(VENV)/bin/autolr bench --study $$s --out benchmarks/results/$$s || exit 1; done

bench-quick: $(VENV)/.installed
	$(VENV)/bin/autolr bench --quick --out bench-results

# Mutation testing of the decision code (mutmut 3, its own venv; slow: not part of CI).
# MUTATE="autolr/_snapshot.py autolr/predictors/*" narrows it; see mutation/README.md.
mutate: $(VENV)/.installed
	VENV_PY=$(PY) MUTATE="$(MUTATE)" MUTATE_TESTS="$(MUTATE_TESTS)" bash mutation/run.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info autolr-demo
