# One entry point for people and CI. Every target creates the venv and installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo up test test-unit test-integration lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@bash scripts/ensure-ffmpeg.sh
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything

demo: $(STAMP)  ## the whole stack on embedded defaults, one video end to end
	$(BIN)/t2v demo "A cat walking across a sunny room, tail swaying"

up: $(STAMP)  ## the whole local stack in the foreground (Ctrl-C stops it)
	$(BIN)/t2v up

test: $(STAMP)  ## the full suite: unit + integration against real services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: model
model: $(STAMP)  ## the model test with a long budget: MODEL_SCHEDULES (10000) from T2V_MODEL_SEED
	T2V_MODEL_SCHEDULES=$(or $(MODEL_SCHEDULES),10000) $(BIN)/python -m pytest tests/model -q -p no:cacheprovider -k model_schedules $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: $(STAMP)  ## fuzz every parser of outside input: FUZZ_SCALE (20) x the CI budget, seed T2V_FUZZ_SEED (random unless set)
	T2V_FUZZ_PROFILE=fuzz T2V_FUZZ_SCALE=$(or $(FUZZ_SCALE),20) $(BIN)/python -m pytest tests/fuzz -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check t2v_core producer worker simulator tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)  ## benchmarks; figures land in benchmarks/results/
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_enqueue.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_money.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
