#!/usr/bin/env bash
# Regenerate data/scifact-teacher: train the cross-encoder, pack it as float16, score the SciFact
# training queries' BM25 + dense top-10 candidates and positives with the packed copy.
# About 60 minutes on a 2-core CPU (figures in data/scifact-teacher/SOURCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-outputs/teacher/scifact-ce}
python -m dr.train +experiment=cross_encoder model.show_progress=false ranker.show_progress=false \
  hydra.run.dir="$run"
python scripts/pack_ranker.py "$run/export" data/scifact-teacher/model
python -m dr.score ranker=scifact_teacher out=data/scifact-teacher/scores.tsv ranker.show_progress=false \
  model.show_progress=false hydra.run.dir="$run-score"
sha256sum data/scifact-teacher/scores.tsv data/scifact-teacher/model/model.safetensors
