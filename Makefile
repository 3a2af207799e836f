# promptreel — `make help` lists the targets.
SHELL := /bin/bash
PY    := $(CURDIR)/.venv/bin/python
PIP   := $(CURDIR)/.venv/bin/pip
conf  ?= klee_garden
args  ?=
sweep ?= seeds
schedule ?= default
pool  ?= promptreel-gpu
concurrency ?=
port  ?= 4200
API   := $(or $(PREFECT_API_URL),http://127.0.0.1:$(port)/api)
# Prefect's environment (PREFECT_HOME in the project, no telemetry, ...) is set in one place,
# flows/env.py: every target below that starts Prefect goes through Python.

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## create .venv and install everything (torch CUDA build that also runs on CPU, audiocraft, ffmpeg)
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-deps torchaudio==2.11.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps audiocraft==1.3.0
	$(PY) -c "import torch, open_clip, taming, audiocraft, prefect, hydra, imageio_ffmpeg, matplotlib; print('setup ok: torch', torch.__version__)"
	@# Debian's chromium, for the test that plays the run report in a browser (skipped without it);
	@# installed only where apt-get runs as root, never a reason for setup to fail
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 \
	  && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
	  || echo "setup: no chromium here; tests/flows/test_report_browser.py will be skipped"

test: ## run the test suite (CPU, offline, generated tiny models)
	$(PY) -m pytest -q tests

render: ## render a preset: make render conf=klee_garden [args="seed=3 --quiet|--verbose --config-dir DIR"]
	$(PY) -m flows.render film=$(conf) $(args)

show: ## print the resolved config, timeline and schedules of a preset; runs nothing
	$(PY) -m flows.render film=$(conf) $(args) --show

smoke: ## the whole DAG on generated tiny models on CPU (random weights: the imagery is noise)
	$(PY) -m flows.render film=smoke $(args)

stop: ## end the open-ended shot rendering now (engine max_iterations=-1), as Ctrl-C: make stop [args="runtime.cache_dir=..."]
	$(PY) -m flows.stop $(args)

fetch-models: ## download (on a connected box) every model a preset needs: make fetch-models conf=klee_garden
	$(PY) -m flows.render film=$(conf) $(args) --fetch-models

bench: ## benchmark engines, memory estimate, pipeline and export; appends to docs/benchmarks.md (CPU: under 10 min)
	$(PY) -m bench.run $(args)
.PHONY: bench

sweep: ## Hydra multirun of a sweep preset: make sweep conf=klee_garden sweep=seeds|resolutions [args="seed=1,2"]
	$(PY) -m flows.render film=$(conf) +sweep=$(sweep) $(args)

server: ## Prefect server + UI on http://127.0.0.1:4200 (loopback; state in .prefect/; port=N to change)
	$(PY) -m flows.prefect_server ui --port $(port)

serve: ## register the scheduled `render` deployment and run its renders here, one at a time
	PREFECT_API_URL=$(API) $(PY) -m flows.serve serve --schedule $(schedule) $(args)

queue: ## add a render to the queue: make queue conf=klee_garden args="seed=2"
	PREFECT_API_URL=$(API) $(PY) -m flows.serve queue film=$(conf) $(args)

deploy: ## several boxes: register the deployment on a process work pool: make deploy pool=promptreel-gpu concurrency=3
	PREFECT_API_URL=$(API) $(PY) -m flows.serve deploy --schedule $(schedule) --pool $(pool) $(if $(concurrency),--concurrency $(concurrency))

worker: ## several boxes: one worker per GPU box on the pool, one render at a time
	PREFECT_API_URL=$(API) $(PY) -m flows.env prefect worker start --pool $(pool) --type process --limit 1

doctor: ## check ffmpeg, GPU, free disk, the models a preset needs, Prefect: make doctor conf=klee_garden
	$(PY) -m flows.render film=$(conf) $(args) --doctor

.PHONY: help setup test render show smoke stop fetch-models doctor sweep server serve queue deploy worker
