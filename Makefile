# nodeflow: `make demo` sets up and runs the demo graph; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-models test test-slow lint bench clean

$(STAMP): pyproject.toml setup.py examples/plugin-example/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all,test]" -e examples/plugin-example
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nodeflow run graphs/demo.json --out out
	@echo "The pictures are in out/. To open one with the graph that made it: $(BIN)/nodeflow edit out/<file>.png"

# Retrain every shipped demo model from scratch into nodeflow/demo/models with the scripts in
# training/ (run from this checkout; they are not part of the installed package; about 8.5 hours
# on a 2-core CPU; each step's budget is its --minutes), then print the quality table.
demo-models: $(STAMP)
	$(BIN)/python -m training.train_vae --minutes 10 --threads 2
	$(BIN)/python -m training.train_vae --init nodeflow/demo/models/checkpoints/nodeflow-shapes/vae \
		--anchor 3 --empty 0.15 --minutes 12 --lr 3e-4 --threads 2
	$(BIN)/python -m training.train_vae --init nodeflow/demo/models/checkpoints/nodeflow-shapes/vae \
		--decoder-only --worst 1 --empty 0.15 --splice 0.5 --minutes 27 --lr 3e-4 --threads 2
	$(BIN)/python -m training.train_vae --init nodeflow/demo/models/checkpoints/nodeflow-shapes/vae \
		--decoder-only --worst 0.5 --empty 0.15 --splice 0.5 --minutes 14 --lr 1e-4 --threads 2
	$(BIN)/python -m training.train_unet --minutes 160 --threads 2
	$(BIN)/python -m training.train_unet --resume --minutes 100 --lr 2e-4 --threads 2
	$(BIN)/python -m training.export_single_file
	$(BIN)/python -m training.train_lora --minutes 45 --rank 16 --targets all --threads 2
	$(BIN)/python -m training.train_controlnet --minutes 25 --threads 2
	$(BIN)/python -m training.train_upscaler --minutes 40 --threads 2
	$(BIN)/python -m training.train_upscaler --init nodeflow/demo/models/upscale/nodeflow-shapes-4x.safetensors \
		--vae nodeflow/demo/models/checkpoints/nodeflow-shapes/vae --vae-p 0.5 --minutes 40 --lr 3e-4 --seed 2 --threads 2
	$(BIN)/python -m training.train_vq --minutes 20 --threads 2
	$(BIN)/python -m training.train_prior --minutes 15 --threads 2
	$(BIN)/python bench/demo_quality.py

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected"; exit 0; fi; exit $$rc

test-slow: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check nodeflow nodes gui tests bench training
	$(BIN)/mypy nodeflow nodes training

bench: $(STAMP)
	$(BIN)/python bench/executor_overhead.py

clean:
	rm -rf $(VENV) out
