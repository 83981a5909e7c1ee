# Two entry points: `make demo` (main job) and `make test` (whole suite). Both build .venv from scratch.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases available offline on the build machines; any torch in
# the pyproject range works for users.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test lint clean fashion-mnist

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Fashion-MNIST for the built-in benchmarks: the Debian package when we can install it, else
# torchvision's download into atcon's data folder (both are found by atcon.data).
fashion-mnist: venv
	@test -d /usr/share/datasets/fashion-mnist || test -n "$$ATCON_FASHION_MNIST" || \
	  { command -v apt-get >/dev/null && test "$$(id -u)" = 0 && \
	    { apt-get install -y -q dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -q dataset-fashion-mnist; }; }; } || \
	  $(BIN)/python -c "from atcon.data import load_fashion_mnist as f; f('train', download=True); f('test', download=True)"

demo: venv fashion-mnist
	$(BIN)/atcon demo --out runs/demo

test: venv lint
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
