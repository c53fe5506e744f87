"""Components of `dr.train` that every method shares: the miner, the export settings, the run summary."""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.encoding.cache import EmbeddingCache, reused_from_earlier_runs
from dr.io import atomic_write_json
from dr.mining.miner import Miner
from dr.models.cross_encoder import CrossEncoder
from dr.models.dual_encoder import DualEncoder
from dr.report import METRICS_FILE, write_curves
from dr.retrievers.dense import DenseRetriever
from dr.trainer.callbacks import ExportCallback


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_miner(cfg: DictConfig, encoder_cfg, device, fusion_teacher: Callable | None = None
                ) -> tuple[Miner | None, DualEncoder | None]:
    """The miner (`miner=`) and, when `miner.model` names one, the fixed model it mines with (STAR's warm-up
    model). Its false-negative teacher (`miner.fn_teacher`): `ranker`, the cross-encoder of `ranker=`
    (frozen); `fusion`, what `fusion_teacher(encoder_cfg, cache)` returns (dr.train passes
    dr.objectives.fusion_teacher.pair_teacher: the trainer's parts do not import the objectives)."""
    if cfg.get("miner") is None:
        return None, None
    miner_cfg = instantiate(cfg.miner, _convert_="all")
    cache = (EmbeddingCache(Path(cfg.cache_dir) / "embeddings", memory_entries=0, dtype=cfg.cache_dtype)
             if cfg.cache_embeddings else None)
    mining_encoder = None
    if miner_cfg.model:  # never trained
        mining_encoder = DualEncoder(encoder_cfg.with_weights(miner_cfg.model))
        mining_encoder.to(device).eval().requires_grad_(False)
    teacher = None
    if miner_cfg.fn_teacher == "ranker":
        judge = CrossEncoder(instantiate(cfg.ranker, _convert_="all")).to(device).eval().requires_grad_(False)

        def teacher(train_set, qid, pids):
            texts = train_set.corpus.texts(train_set.corpus.rows_of(list(pids)))
            return judge.score([train_set.queries[qid]] * len(texts), texts, desc="false-negative filter")
    elif miner_cfg.fn_teacher == "fusion":
        if fusion_teacher is None:
            raise ValueError("miner.fn_teacher=fusion: no fusion teacher was given to build_miner")
        teacher = fusion_teacher(encoder_cfg, cache)
    return Miner(miner_cfg, cache, teacher), mining_encoder


def export_callback(cfg: DictConfig, out_dir: Path, retriever) -> ExportCallback:
    """`export.index=true`: the trained passage tower's faiss index of `export.corpus` (an eval set name;
    default the first eval set) goes into the export beside the encoder."""
    export = cfg.get("export") or {}
    if not export.get("index"):
        return ExportCallback(out_dir)
    if not isinstance(retriever, DenseRetriever):
        raise ValueError("export.index=true writes a dense index: it needs a dual encoder evaluated with "
                         "retriever=dense (JPQ exports its own PQ index)")
    name = export.get("corpus") or next(iter(cfg.data.eval_sets))
    if name not in cfg.data.eval_sets:
        raise ValueError(f"export.corpus={name!r} is not an eval set of data={cfg.data.name}; known: "
                         f"{list(cfg.data.eval_sets)}")
    index = dataclasses.replace(retriever.index, factory=export.get("factory") or "Flat")
    return ExportCallback(out_dir, retriever, index, instantiate(cfg.data.eval_sets[name], _convert_="all"))


def write_summary(trainer, out_dir: Path, wall: float) -> None:
    """timings.json and the lines printed at the end of a run (main process)."""
    refresh_s = sum(r["total_s"] for r in trainer.refreshes)
    atomic_write_json(out_dir / "timings.json", {
        "wall_s": wall, "steps": trainer.state.step, "world_size": trainer.accelerator.num_processes,
        "refreshes": len(trainer.refreshes), "refresh_s": refresh_s, "train_loop_s": trainer.loop_s,
        "embedding_cache_reused": reused_from_earlier_runs(),
        "refresh_fraction_of_training": refresh_s / trainer.loop_s if trainer.loop_s else 0.0})
    if trainer.refreshes:
        print(f"miner: {len(trainer.refreshes)} refreshes, {refresh_s:.0f}s = "
              f"{100 * refresh_s / max(trainer.loop_s, 1e-9):.0f}% of the training loop "
              f"({trainer.loop_s:.0f}s); costs in {out_dir / 'refresh.jsonl'}")
    print(f"run dir: {out_dir}  export: {out_dir / 'export'}  wall: {wall:.0f}s")
    curves = write_curves(out_dir)  # None (after a warning) when matplotlib is missing
    report = [f"metrics: {out_dir / METRICS_FILE}"] if (out_dir / METRICS_FILE).exists() else []
    report += [f"curves: {curves}"] if curves else []
    if report:
        print("  ".join(report))
