# CalibAtt Studio — set-up, tests and demos. `make help` lists the targets.
#
# torch: where `nvidia-smi` finds an NVIDIA GPU the CUDA build of torch (and triton) is installed,
# otherwise the CPU build torch==$(TORCH_CPU_VERSION). Override with TORCH=cpu or TORCH=cuda, or set
# TORCH_SPEC to any pip requirement (e.g. TORCH_SPEC='torch==2.9.1').

PYTHON ?= python3
VENV ?= .venv
TORCH ?= auto
TORCH_CPU_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.calibstudio-installed

ifeq ($(TORCH),auto)
  TORCH := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
endif
ifeq ($(TORCH),cuda)
  TORCH_SPEC ?= torch triton
else
  # triton is only needed on the CPU for its interpreter (kernel tests with TRITON_INTERPRET=1).
  TORCH_SPEC ?= torch==$(TORCH_CPU_VERSION) triton
endif

.PHONY: help install studio demo test lint wheel screenshots clean

help:
	@echo "make studio   set up .venv and start the studio on the bundled demo model (headless: the demo)"
	@echo "make test     set up .venv with test extras and run the whole suite"
	@echo "make demo     headless: dense vs sparse compare on the demo model -> build/demo (MP4s, report)"
	@echo "make lint     ruff"
	@echo "make wheel    build the wheel into dist/"
	@echo "make screenshots  render every studio view into docs/screenshots/ (a real demo-model compare: minutes)"
	@echo "torch build: $(TORCH) ($(TORCH_SPEC)); override with TORCH=cpu|cuda or TORCH_SPEC=..."

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing torch ($(TORCH) build: $(TORCH_SPEC)) and calibstudio into $(VENV)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[engine,studio,test]'
	@touch $@

install: $(STAMP)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

studio: $(STAMP)
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ "$$(uname)" = Linux ]; then \
		echo "No display found (DISPLAY/WAYLAND_DISPLAY unset): running the headless demo instead."; \
		$(MAKE) --no-print-directory demo; \
	else \
		$(BIN)/calibstudio studio --profile $(DEMO_PROFILE) || $(MAKE) --no-print-directory demo; \
	fi

DEMO_PROFILE := resources/demo_model/profile.safetensors
DEMO_PROMPT ?= a red circle moves left on a blue background
# compare uses the model's recommended threshold (0.9 for the demo model: at 0.99 every layer would run dense).
demo: $(STAMP)
	@echo "Dense vs sparse on the bundled demo model, with the profile shipped for it ($(DEMO_PROFILE)):"
	$(BIN)/calibstudio profile info $(DEMO_PROFILE)
	@mkdir -p build/demo
	$(BIN)/calibstudio compare --prompt "$(DEMO_PROMPT)" --out-dir build/demo
	@echo "side by side: build/demo/side_by_side.mp4   report: build/demo/report.json"

wheel: $(STAMP)
	$(BIN)/python -m build --wheel --no-isolation --outdir dist .

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m calibstudio.app.screenshots docs/screenshots --model demo

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
