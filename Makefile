# make install: dependencies + dr (editable). On the project's CI machines `torch==2.13.0` is a local
# CPU wheel; if torch is already importable it is left alone, so a GPU user's CUDA build stays.
PYTHON ?= python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-fast evaluate bm25 teacher clean

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow and not gpu"

evaluate:
	$(PYTHON) -m dr.evaluate

bm25:
	$(PYTHON) -m dr.evaluate retriever=bm25

teacher:  # regenerate data/scifact-teacher (~1 hour on 2 CPU cores)
	bash scripts/make_scifact_teacher.sh

clean:
	rm -rf outputs .pytest_cache
