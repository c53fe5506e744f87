#!/usr/bin/env bash
# GPU check (issue 18): at most ~10 minutes on one GPU. Run it on a machine with CUDA, after `make install`
# (with faiss-gpu: `make install GPU=1`), and paste its output into docs/BENCHMARKS.md.
#   1. the gpu-marked tests;
#   2. a few bf16 training steps through the trainer, with gradient checkpointing, then with GradCache;
#   3. faiss-gpu search against CPU search on the same vectors;
#   4. bf16 vs fp32 encoding throughput and SciFact-test nDCG@10 (python -m dr.evaluate, no cache).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
status=0
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
python - <<'PY'
import torch, faiss
from dr.index import faiss_build
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(),
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
print(faiss_build(), "GPUs seen by faiss:", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0)
PY

step "1. gpu-marked tests"
timeout 240 python -m pytest -q -m gpu -p no:cacheprovider || status=1

step "2a. bf16 training steps with gradient checkpointing"
timeout 150 python -m dr.train +experiment=bm25_negatives trainer=gpu trainer.max_steps=3 trainer.batch_size=32 \
  trainer.gradient_checkpointing=true trainer.dev_queries=0 'test_sets=[]' trainer.save_every=0 \
  trainer.eval_every=0 hydra.run.dir="$OUT/train_gc" || status=1
step "2b. bf16 training steps with GradCache (chunks of 8)"
timeout 150 python -m dr.train +experiment=bm25_negatives trainer=gpu trainer.max_steps=3 trainer.batch_size=32 \
  trainer.grad_cache_chunk=8 trainer.dev_queries=0 'test_sets=[]' trainer.save_every=0 \
  trainer.eval_every=0 hydra.run.dir="$OUT/train_gradcache" || status=1
python - "$OUT" <<'PY' || status=1
import json, sys
from pathlib import Path
for name in ("train_gc", "train_gradcache"):
    logs = [json.loads(l) for l in (Path(sys.argv[1]) / name / "train_log.jsonl").read_text().splitlines()]
    print(name, "losses", [round(l["loss"], 4) for l in logs], "queries/s", [round(l["queries_per_s"], 1) for l in logs])
PY

step "3. faiss-gpu search against CPU search"
timeout 120 python - <<'PY' || status=1
import time
import numpy as np
from dr.index import IndexConfig, build_index
rng = np.random.default_rng(0)
x = rng.standard_normal((1_000_000, 384), dtype=np.float32)
q = rng.standard_normal((2_000, 384), dtype=np.float32)
res = {}
for device in ("cpu", "gpu"):
    start = time.perf_counter()
    index = build_index(x, IndexConfig(factory="Flat", device=device))
    s, i = index.search(q, 100)
    res[device] = (s, i, time.perf_counter() - start)
same = (res["cpu"][1] == res["gpu"][1]).mean()
print(f"Flat 1M x 384, 2,000 queries, top 100: identical ids {same:.4%}, max |score diff| "
      f"{np.abs(res['cpu'][0] - res['gpu'][0]).max():.2e}; build+search cpu {res['cpu'][2]:.1f}s gpu {res['gpu'][2]:.1f}s")
assert same > 0.999
PY

step "4. encoding: bf16 vs fp32, SciFact-test (no cache)"
for p in fp32 bf16; do
  timeout 150 python -m dr.evaluate 'eval_sets=[scifact-test]' model.precision=$p model.batch_size=256 \
    cache_embeddings=false model.show_progress=false hydra.run.dir="$OUT/encode_$p" > "$OUT/encode_$p.log" 2>&1 || status=1
done
python - "$OUT" <<'PY' || status=1
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
r = {p: (json.loads((out / f"encode_{p}" / "timings.json").read_text()),
         json.loads((out / f"encode_{p}" / "metrics.json").read_text())["scifact-test"]["nDCG@10"]) for p in ("fp32", "bf16")}
for p, (t, ndcg) in r.items():
    print(f"{p}: {t['passages_per_s']:.0f} passages/s, SciFact-test nDCG@10 {ndcg:.4f}")
print(f"bf16 / fp32 throughput {r['bf16'][0]['passages_per_s'] / r['fp32'][0]['passages_per_s']:.2f}x, "
      f"|delta nDCG@10| {abs(r['bf16'][1] - r['fp32'][1]):.4f}")
PY

step "done: status $status"
exit $status
