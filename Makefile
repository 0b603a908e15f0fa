# One entry point for people and CI. Every target creates the venv and installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What `make setup` installs: exactly the versions (and sha256 hashes) in requirements.lock;
# requirements-image.lock is the same pins for the extras ops/Dockerfile installs.
LOCK := requirements.lock
IMAGE_LOCK := requirements-image.lock
TOOLS := $(VENV)-tools
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: setup demo up test test-unit test-integration lint bench clean lock check-lock audit

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
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

lint: $(STAMP)  ## ruff (lint and format), mypy strict
	$(BIN)/ruff check t2v_core producer worker simulator web tests benchmarks scripts
	$(BIN)/ruff format --check t2v_core producer worker simulator web tests benchmarks scripts
	$(BIN)/mypy

bench: $(STAMP)  ## benchmarks; figures land in benchmarks/results/
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_enqueue.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_money.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_fairness.py
	$(BIN)/python benchmarks/bench_callbacks.py
	$(BIN)/python benchmarks/bench_async.py
	$(BIN)/python benchmarks/bench_wakeup.py
	$(BIN)/python benchmarks/bench_policy.py
	@# scale at a modest size (full sizes: see README "Scale"); plots redrawn from every result
	$(BIN)/python benchmarks/bench_scale.py backlog --jobs 2000 --render-mean 4 --duration 60 --out scale-backlog-make.json
	$(BIN)/python benchmarks/bench_scale.py inflight --jobs 500 --render-mean 20 --out scale-inflight-make.json
	$(BIN)/python benchmarks/bench_delays.py --jobs 1000

# pip-tools and pip-audit live in their own venv: they are not part of the locked set.
$(TOOLS)/.ok:
	@test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q 'pip-tools>=7.4,<8' 'pip-audit>=2.7,<3'
	@touch $@

# Re-resolve pyproject.toml's ranges to the newest versions and hash them (needs the package
# index). The image lock starts from the dev lock's pins, so the two agree on every version.
lock: $(TOOLS)/.ok  ## refresh requirements.lock and requirements-image.lock (needs the index)
	CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/bin/pip-compile -q --upgrade --generate-hashes \
	  --extra dev --strip-extras --unsafe-package t2v-queue --no-emit-index-url \
	  --no-emit-find-links --output-file $(LOCK) pyproject.toml
	@# the dev extra names the project itself (t2v-queue[postgres,...]): it is installed
	@# from the work tree with --no-deps, never from the lock
	sed -i '/^# WARNING: The following packages were not pinned/,/^# t2v-queue$$/d' $(LOCK)
	sed -i -e :a -e '/^\n*$$/{$$d;N;ba' -e '}' $(LOCK)
	cp $(LOCK) $(IMAGE_LOCK)
	CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/bin/pip-compile -q --generate-hashes \
	  --extra worker --extra postgres --extra simulator --strip-extras \
	  --unsafe-package t2v-queue --no-emit-index-url --no-emit-find-links \
	  --output-file $(IMAGE_LOCK) pyproject.toml

check-lock: $(STAMP)  ## the venv holds exactly the locked versions (pip freeze against the lock)
	$(BIN)/python scripts/check-lock.py --python $(BIN)/python $(LOCK)

audit: $(TOOLS)/.ok  ## known vulnerabilities in the locked sets (needs the vulnerability database)
	$(TOOLS)/bin/pip-audit --strict --require-hashes --disable-pip -r $(LOCK)
	$(TOOLS)/bin/pip-audit --strict --require-hashes --disable-pip -r $(IMAGE_LOCK)

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
