# The README's two commands are `make run` and `make test`; both build .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# dev: pytest + ruff; fast: scikit-learn-intelex (x86-64 only; empty elsewhere); ray: Ray executor;
# models: skops, onnx, onnxruntime, skl2onnx (saved SVMs, export); mlflow: tracking export
EXTRAS ?= dev,fast,ray,models,mlflow
STAMP := $(VENV)/.mnistbench-installed

.PHONY: setup run test test-fast lint bench gpu-pack gpu-check gpu-lane clean clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: fetch and verify both datasets, run the quick study (about 2 minutes on
# 2 CPU cores), then write its report to results/report/. Run it again and only what is
# missing runs.
STUDY ?= configs/quick.toml
run: setup
	$(BIN)/mnistbench data fetch
	$(BIN)/mnistbench data info
	$(BIN)/mnistbench study run $(STUDY)
	$(BIN)/mnistbench study status
	$(BIN)/mnistbench report --study $(STUDY)
	@echo
	@echo "The report: results/report/report.md, and report.html beside it (open it in a browser)."
	@echo "The command: $(BIN)/mnistbench --help, or 'source $(BIN)/activate' first, then mnistbench."

# Everything, slow end-to-end and network tests included (CI runs exactly this).
test: setup
	$(BIN)/python -m pytest

# Skip the slow and network tests while iterating.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not network"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Speed/accuracy benchmarks (issue 7); each prints a markdown table, and the numbers with their
# machine go to benchmarks/README.md. QUICK=1: small cases, one repeat, under 10 minutes on the
# 2-core CPU; the full set takes about an hour there. The speedrun keeps its runs in
# results/speedrun.db, so a second `make bench` only re-prints that table. jobs.py (--jobs 1/2/auto
# over a study, about 25 minutes) and search_vs_grid.py (about an hour) run in the full set only.
bench: setup
	$(BIN)/mnistbench data fetch
	$(BIN)/python benchmarks/svm_backends.py $(if $(QUICK),--quick)
	$(BIN)/python benchmarks/train_throughput.py $(if $(QUICK),--quick --repeats 1)
	$(BIN)/python benchmarks/efficiency.py $(if $(QUICK),--quick)
	$(BIN)/python benchmarks/speedrun.py $(if $(QUICK),--quick)
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/report_scale.py
	$(if $(QUICK),,$(BIN)/python benchmarks/jobs.py --repeats 3)
	$(if $(QUICK),,$(BIN)/python benchmarks/search_vs_grid.py)

# GPU check (benchmarks/gpu_check.py): the CUDA tests first, eager against captured steps at the
# published protocol, a captured AMP run resumed, and the CPU rate at 224 px, in under 6 minutes
# on one H200. GPU lane (benchmarks/gpu_lane.py): runs sharing the GPU, Q2's GPU rows, a real
# slice of the Q1(a) shapes against its projection, and the GPU lane of configs/assignment.toml,
# in about 4 minutes. Neither needs an install: the GPU machine's own torch with PYTHONPATH=src.
# gpu-pack writes the verified datasets as .gz (41 MB) to gpu-pack/, for a machine that cannot
# download them; both read them from there when present, and otherwise from the data root or
# the network (a machine with neither stops at once, naming gpu-pack). Without a GPU: exit 1.
GPU_PACK ?= gpu-pack
GPU_OUT ?= gpu-check
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_DATA = $(if $(wildcard $(GPU_PACK)),--pack $(GPU_PACK),$(info no $(GPU_PACK)/ here: the datasets come from the data root, else the network))
gpu-pack:
	PYTHONPATH=src $(GPU_PYTHON) -m mnistbench data pack $(GPU_PACK)

gpu-check:
	PYTHONPATH=src $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_OUT) $(GPU_DATA) $(GPU_CHECK_ARGS)

gpu-lane:
	PYTHONPATH=src $(GPU_PYTHON) benchmarks/gpu_lane.py $(GPU_OUT) $(GPU_DATA) $(GPU_LANE_ARGS)

# clean: the venv and tool caches, and the checkpoints and final models of the shipped studies'
# runs (`study clean`: their results stay in the store, and a run in progress is left alone).
# clean-results: all of results/: the store, with every run of every study, models and reports.
STORE ?= results/mnistbench.db
clean:
	if [ -x $(BIN)/mnistbench ] && [ -f $(STORE) ]; then \
		for study in configs/*.toml; do \
			$(BIN)/mnistbench study clean $$study --store $(STORE) || exit 1; \
		done; \
	fi
	rm -rf $(VENV) .pytest_cache .ruff_cache

clean-results:
	rm -rf results
