"""`python -m dr.train`: the composition root. The only place that turns config into objects.

    python -m dr.train +experiment=bm25_negatives
    accelerate launch --multi_gpu --num_processes 8 -m dr.train +experiment=inbatch   # same code, 8 GPUs
    torchrun --nproc_per_node 2 -m dr.train +experiment=inbatch                      # 2 CPU processes (gloo)
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import get_linear_schedule_with_warmup

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.dev import dev_set
from dr.data.groups import GroupSchedule, split_dev
from dr.eval.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator, write_json
from dr.mining.miner import Miner
from dr.models.dual_encoder import DualEncoder
from dr.retrievers.dense import DenseRetriever
from dr.trainer.adore import AdoreObjective
from dr.trainer.callbacks import CheckpointCallback, EvalCallback, LogCallback, MinerCallback
from dr.trainer.checkpoint import TrainState, load_checkpoint, resolve_resume
from dr.trainer.config import TrainerConfig
from dr.trainer.loop import Trainer
from dr.trainer.objective import ContrastiveObjective

logger = logging.getLogger(__name__)
register_resolvers()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: DictConfig, out_dir: Path) -> Trainer:
    tcfg: TrainerConfig = instantiate(cfg.trainer, _convert_="all")
    encoder_cfg = instantiate(cfg.model, _convert_="all")  # validated before anything heavy is loaded
    loss = instantiate(cfg.loss, _convert_="all")
    accelerator = Accelerator(
        mixed_precision=tcfg.mixed_precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=not encoder_cfg.shared)],
    )
    seed_everything(tcfg.seed)
    with accelerator.main_process_first():  # the main process builds the Arrow cache; the others reuse it
        train_set = instantiate(cfg.data.train, _convert_="all")
    train_qids, dev_qids = split_dev(train_set, tcfg.dev_queries, tcfg.seed)
    encoder = DualEncoder(encoder_cfg)
    if tcfg.gradient_checkpointing:
        towers = {id(encoder.query_model): encoder.query_model, id(encoder.passage_model): encoder.passage_model}
        for tower in towers.values():
            # non-reentrant: a shared tower is used twice per step, which reentrant checkpointing under
            # DDP rejects ("mark a variable ready only once")
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings") if cfg.cache_embeddings else None
    objective = _build_objective(cfg, tcfg, encoder, loss, train_set, train_qids, cache, accelerator)
    optimizer = instantiate(cfg.optimizer, _convert_="all")(params=_param_groups(objective, tcfg.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * tcfg.max_steps), tcfg.max_steps)
    # The scheduler is not prepared: Accelerate would step it once per process, since it assumes a
    # dataloader split across processes; our schedule counts global optimizer steps.
    model, optimizer = accelerator.prepare(objective, optimizer)

    state, negatives = TrainState(), None
    resume_from = resolve_resume(cfg.resume, out_dir)
    if resume_from is not None:
        state, negatives = load_checkpoint(resume_from, accelerator.unwrap_model(model), optimizer, scheduler,
                                           accelerator.process_index)
    miner, mining_encoder = _build_miner(cfg, encoder_cfg, accelerator)
    if miner is None and negatives is None and cfg.get("negatives") is not None:
        negatives = instantiate(cfg.negatives, _convert_="all").negatives(train_set, train_qids)
    global_batch = tcfg.batch_size * accelerator.num_processes
    schedule = GroupSchedule(train_set, train_qids, negatives, tcfg.negatives_per_query, global_batch, tcfg.seed,
                             mined=miner is not None)

    if tcfg.select_metric not in cfg.measures:
        raise ValueError(f"trainer.select_metric={tcfg.select_metric!r} is not in measures={list(cfg.measures)}")
    evaluator = Evaluator(measures=list(cfg.measures), depth=int(cfg.depth))
    retriever = instantiate(cfg.retriever, _convert_="all")
    if not isinstance(retriever, functools.partial):
        raise ValueError("dr.train evaluates the model it trains: use retriever=dense (BM25 runs in dr.evaluate)")
    retriever = retriever(encoder=encoder, cache=cache)
    names = list(cfg.data.eval_sets) if cfg.test_sets is None else list(cfg.test_sets)
    test_sets = [instantiate(cfg.data.eval_sets[n], _convert_="all") for n in names]
    dev = dev_set(train_set, dev_qids, tcfg.dev_corpus_size, name=f"{train_set.name}-dev") if dev_qids else None
    callbacks = [MinerCallback(miner, mining_encoder)] if miner is not None else []
    callbacks += [
        LogCallback(out_dir, tcfg.log_every, tcfg.tensorboard),
        EvalCallback(out_dir, evaluator, retriever, dev, test_sets, tcfg.eval_every, tcfg.zero_shot_eval,
                     tcfg.select_metric),
        CheckpointCallback(out_dir, tcfg.save_every, tcfg.keep_checkpoints),
    ]
    return Trainer(tcfg, accelerator, model, optimizer, scheduler, schedule, callbacks, state, negatives)


def _build_objective(cfg: DictConfig, tcfg: TrainerConfig, encoder: DualEncoder, loss, train_set, train_qids,
                     cache: EmbeddingCache | None, accelerator: Accelerator) -> torch.nn.Module:
    """Contrastive (default) or ADORE (`objective=adore`: query tower against a fixed passage index)."""
    if cfg.get("objective") is None:
        return ContrastiveObjective(encoder, loss, cross_device=tcfg.cross_device)
    if cfg.get("miner") is not None or cfg.get("negatives") is not None:
        raise ValueError("objective=adore retrieves its own negatives at every step: set miner=null negatives=null")
    adore_cfg = instantiate(cfg.objective, _convert_="all")
    with accelerator.main_process_first():  # the main process encodes (or finds them cached) first
        emb = DenseRetriever(encoder, cache=cache).corpus_embeddings(train_set.corpus)
    corpus = train_set.corpus
    positives = {q: train_set.positives(q) for q in train_qids}
    return AdoreObjective(encoder, adore_cfg, emb, corpus.ids[corpus.active_rows], positives)


def _build_miner(cfg: DictConfig, encoder_cfg, accelerator: Accelerator) -> tuple[Miner | None, DualEncoder | None]:
    """The miner and, when `miner.model` names one, the fixed model it mines with (STAR's warm-up model)."""
    if cfg.get("miner") is None:
        return None, None
    if cfg.get("negatives") is not None:
        raise ValueError("choose one source of hard negatives: negatives=... or miner=..., not both")
    miner_cfg = instantiate(cfg.miner, _convert_="all")
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", memory_entries=0) if cfg.cache_embeddings else None
    mining_encoder = None
    if miner_cfg.model:  # never trained
        mining_encoder = DualEncoder(dataclasses.replace(encoder_cfg, name_or_path=miner_cfg.model, shared=True))
        mining_encoder.to(accelerator.device).eval().requires_grad_(False)
    return Miner(miner_cfg, cache), mining_encoder


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT recipe); shared towers counted once."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> dict:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    trainer = build_trainer(cfg, out_dir)
    if trainer.accelerator.is_main_process:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer.train()
    wall = time.perf_counter() - start
    if trainer.accelerator.is_main_process:
        refresh_s = sum(r["total_s"] for r in trainer.refreshes)
        write_json(out_dir / "timings.json", {"wall_s": wall, "steps": trainer.state.step,
                                              "world_size": trainer.accelerator.num_processes,
                                              "refreshes": len(trainer.refreshes), "refresh_s": refresh_s,
                                              "train_loop_s": trainer.loop_s,
                                              "refresh_fraction_of_training": refresh_s / trainer.loop_s
                                              if trainer.loop_s else 0.0})
        if trainer.refreshes:
            print(f"miner: {len(trainer.refreshes)} refreshes, {refresh_s:.0f}s = "
                  f"{100 * refresh_s / max(trainer.loop_s, 1e-9):.0f}% of the training loop "
                  f"({trainer.loop_s:.0f}s); costs in {out_dir / 'refresh.jsonl'}")
        print(f"run dir: {out_dir}  export: {out_dir / 'export'}  wall: {wall:.0f}s")
    final = next((cb.final for cb in trainer.callbacks if isinstance(cb, EvalCallback)), {})
    trainer.accelerator.end_training()
    return final


if __name__ == "__main__":
    main()
