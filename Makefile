# Two entry points, each creating its own virtual environment on first use:
#   make demo   detect keypoints on examples/astronaut.jpg (core runtime only: numpy, OpenCV, ONNX Runtime)
#   make test   run the test suite (installs torch, export and training extras)
#   make lint   ruff check + ruff format --check over the repository (configured in pyproject.toml)
PYTHON ?= python3
DEMO_VENV ?= .venv-demo
DEV_VENV ?= .venv
# PyTorch releases the project is tested with (pyproject.toml itself allows torch>=2.4).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DEMO_MODEL ?= models/kpnet-small.onnx
DEMO_IMAGE ?= examples/astronaut.jpg

.PHONY: demo test lint clean

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m kpnet detect $(DEMO_IMAGE) --model $(DEMO_MODEL) --out out/demo

test: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m pytest -q

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q .
	touch $@

$(DEV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q $(TORCH_PIN)
	$(DEV_VENV)/bin/pip install -q -e '.[torch,export,train,dev]'
	touch $@

clean:
	rm -rf $(DEMO_VENV) $(DEV_VENV) out build *.egg-info
