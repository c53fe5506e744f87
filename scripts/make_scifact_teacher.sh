#!/usr/bin/env bash
# Regenerate data/scifact-teacher: train the cross-encoder in two stages, pack it as float16, score the
# SciFact training queries' BM25 + dense top-10 candidates and positives with the packed copy.
# About 2 hours on a 2-core CPU (figures in data/scifact-teacher/SOURCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-outputs/teacher/scifact-ce}
quiet="model.show_progress=false ranker.show_progress=false"
# Stage 1: from all-MiniLM-L6-v2 with a new head; 3 negatives from BM25's top 30.
python -m dr.train +experiment=cross_encoder $quiet hydra.run.dir="$run"
# Stage 2: from stage 1, 4 negatives per query from BM25's top 100, the depth the teacher reranks at
# (stage 1 alone is fooled by deeper, easier-looking passages); selected on dev reranking BM25's top 100.
python -m dr.train +experiment=cross_encoder $quiet hydra.run.dir="$run-deep" \
  ranker.name_or_path="$run/export" objective.head_lr=null objective.rerank_depth=100 \
  'negatives.window=[0,100]' negatives.per_query=100 trainer.negatives_per_query=4 \
  trainer.max_steps=120 trainer.lr=2e-5 trainer.warmup_ratio=0.05 trainer.eval_every=120 \
  trainer.save_every=60 trainer.zero_shot_eval=true
python scripts/pack_ranker.py "$run-deep/export" data/scifact-teacher/model
python -m dr.score ranker=scifact_teacher out=data/scifact-teacher/scores.tsv $quiet \
  hydra.run.dir="$run-score"
sha256sum data/scifact-teacher/scores.tsv data/scifact-teacher/model/model.safetensors
