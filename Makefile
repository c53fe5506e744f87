# make install: dependencies + dr (editable). On the project's CI machines `torch==2.13.0` is a local
# CPU wheel; if torch is already importable it is left alone, so a GPU user's CUDA build stays.
# One faiss build: faiss-cpu, or with GPU=1 faiss-gpu (extras cpu / gpu; see pyproject.toml).
PYTHON ?= python
TORCH_SPEC ?= torch==2.13.0
FAISS_EXTRA := $(if $(GPU),gpu,cpu)

.PHONY: install test test-fast evaluate bm25 teacher bench results scale clean

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(if $(GPU),-$(PYTHON) -m pip uninstall -y faiss-cpu)
	$(PYTHON) -m pip install -e ".[$(FAISS_EXTRA),dev]"

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow and not gpu"

evaluate:
	$(PYTHON) -m dr.evaluate

bm25:
	$(PYTHON) -m dr.evaluate retriever=bm25

teacher:  # regenerate data/scifact-teacher (~2 hours on 2 CPU cores: two training stages, then scoring)
	bash scripts/make_scifact_teacher.sh

# dr vs sentence-transformers (training and encoding, at equal precision and each at its defaults), fp32 and
# bf16 matmul peaks and model FLOP utilization, padded vs padding-free steps, a profile of one step, miner
# refresh overhead and memory -> docs/BENCHMARKS.md (generated block) and docs/bench/bench.json. About 15 to
# 20 minutes on 2 CPU cores (estimated from --quick and docs/BENCHMARKS.md's timings), up to 5 of them the
# miner refresh over the whole SciFact corpus (BENCH_ARGS="--refresh-passages 1000" extrapolates it).
bench:
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

# every experiment on the embedded default, one process each, into outputs/results/NAME, then the table in
# docs/RESULTS.md (generated block) and docs/results.png. About 6 hours of 2 CPU cores from scratch (the sum
# of docs/RESULTS.md's wall times); resumable: finished commands are skipped (RESULTS_ARGS="--dry-run" shows
# the plan, "--table-only" only redraws, "--only star_adore" runs one row and what it needs). SEEDS=3 also
# runs seeds 1 and 2 of the rows that train (RESULTS_ARGS="--only bm25_negatives,ance" to choose them).
results:
	$(PYTHON) scripts/results.py $(if $(SEEDS),--seeds $(SEEDS)) $(RESULTS_ARGS)

# dr's data path on MS MARCO-shaped synthetic collections (1M and 8.8M passages, 1 and 2 processes): corpus
# store, BM25 index, teacher table, one miner refresh, one evaluation -> docs/scale/scale.json (docs/SCALE.md).
# Hours on 2 CPU cores, ~70 GB of disk at 8.8M; SCALE_ARGS="--passages 1000000 --processes 1" for one run.
scale:
	$(PYTHON) scripts/scale.py $(SCALE_ARGS)

clean:
	rm -rf outputs .pytest_cache
