# camanim: `make demo` runs the default job, `make test` sets up and passes the tests (each from a fresh clone).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean browser readme-figure

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned to the build this machine installs from disk (a plain 'torch' resolves to it too)
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/camanim --out camanim-out

# the README's figure: the default model scored with ybROAD, its filmstrip (docs/figure-lite0.png, < 300 KB)
readme-figure: $(STAMP)
	$(BIN)/camanim run --road --no-video --quiet --out build/readme-run
	$(BIN)/camanim figure build/readme-run --with-road --depths 0,25,50,75,100 --dpi 100 --out build/figure-lite0.pdf
	mkdir -p docs && cp build/figure-lite0.png docs/figure-lite0.png

browser:
	bash scripts/install_chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/pytest -q -rs

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_road.py
	$(BIN)/python benchmarks/bench_methods.py

clean:
	rm -rf camanim-out .pytest_cache
