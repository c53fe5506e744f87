"""`python -m dr.train`: the composition root. The only place that turns config into objects.

    python -m dr.train +experiment=bm25_negatives
    accelerate launch --multi_gpu --num_processes 8 -m dr.train +experiment=inbatch   # same code, 8 GPUs
    torchrun --nproc_per_node 2 -m dr.train +experiment=inbatch                      # 2 CPU processes (gloo)

The method is `objective=NAME` (dr/objectives/): its config validates the composed config before anything
is loaded, names the model it trains and builds the objective from the loaded parts.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import hydra
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import get_linear_schedule_with_warmup

from dr.config import CONFIG_DIR, eval_set_names, register_resolvers
from dr.data.groups import split_dev
from dr.encoding.cache import EmbeddingCache
from dr.eval.dev import dev_set
from dr.eval.evaluator import Evaluator
from dr.models.precision import resolve_precision
from dr.objectives.base import ConfigError, ObjectiveConfig, Parts
from dr.objectives.fusion_teacher import pair_teacher
from dr.runtime import configure_allocator
from dr.trainer.build import build_miner, export_callback, seed_everything, write_summary
from dr.trainer.callbacks import CheckpointCallback, EvalCallback, LogCallback, MinerCallback
from dr.trainer.checkpoint import TrainState, load_checkpoint, resolve_resume, resume_requested
from dr.trainer.config import TrainerConfig
from dr.trainer.loop import Trainer
from dr.trainer.resume_check import RESUME_CONFIG, check_resume_config, resume_config
from dr.trainer.run_logs import rewind_logs

register_resolvers()


def validate(cfg: DictConfig) -> tuple[ObjectiveConfig, TrainerConfig, list[str], object]:
    """Every check that needs no data or model: the method's combination of groups, the trainer, eval sets,
    the retriever of evaluations during training (retriever=dense, built around the model being trained)."""
    method: ObjectiveConfig = instantiate(cfg.objective, _convert_="all")
    if not isinstance(method, ObjectiveConfig):
        raise ConfigError(f"objective={cfg.objective.get('_target_')} is not an objective config (dr.objectives)")
    method.validate(cfg)
    tcfg: TrainerConfig = instantiate(cfg.trainer, _convert_="all")
    if tcfg.select_metric not in cfg.measures:
        raise ConfigError(f"trainer.select_metric={tcfg.select_metric!r} is not in measures={list(cfg.measures)}")
    test_names = eval_set_names(cfg.data, cfg.test_sets, "test_sets")  # a typo fails before anything loads
    dense = instantiate(cfg.retriever, _convert_="all")
    if not isinstance(dense, functools.partial):
        raise ConfigError("dr.train evaluates the model it trains: use retriever=dense (BM25 runs in dr.evaluate)")
    return method, tcfg, test_names, dense


def build_trainer(cfg: DictConfig, out_dir: Path) -> Trainer:
    configure_allocator()
    method, tcfg, test_names, dense = validate(cfg)
    encoder_cfg = method.encoder_config(cfg)
    precision = resolve_precision(tcfg.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu", "training")
    accelerator = Accelerator(mixed_precision=precision.accelerate, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(
                                  find_unused_parameters=method.find_unused_parameters(encoder_cfg))])
    resume_from = resolve_resume(cfg.resume, out_dir)
    run_config = resume_config(OmegaConf.to_container(cfg, resolve=True), accelerator.num_processes)
    if resume_from is not None:  # before anything is loaded: a changed batch setting fails at once
        check_resume_config(resume_from, run_config, enforce=cfg.resume_check)
    if accelerator.is_main_process and resume_requested(cfg.resume):
        rewind_logs(out_dir, resume_from)  # lines of steps after the checkpoint are about to be written again
    seed_everything(tcfg.seed)
    with accelerator.main_process_first():  # the main process builds the Arrow cache; the others reuse it
        train_set = instantiate(cfg.data.train, _convert_="all")
    train_qids, dev_qids = split_dev(train_set, tcfg.dev_queries, tcfg.seed)
    encoder = method.make_encoder(encoder_cfg)
    if tcfg.gradient_checkpointing:
        encoder.gradient_checkpointing_enable()
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype) if cfg.cache_embeddings else None
    parts = Parts(cfg, tcfg, train_set, train_qids, cache, accelerator, out_dir)
    objective = method.build(encoder, parts)
    optimizer = instantiate(cfg.optimizer, _convert_="all")(params=objective.param_groups(tcfg.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * tcfg.max_steps), tcfg.max_steps)
    # The scheduler is not prepared: Accelerate would step it once per process, since it assumes a
    # dataloader split across processes; our schedule counts global optimizer steps.
    model, optimizer = accelerator.prepare(objective, optimizer)

    state, negatives = TrainState(), None
    if resume_from is not None:
        state, negatives = load_checkpoint(resume_from, accelerator.unwrap_model(model), optimizer, scheduler,
                                           accelerator.process_index)
    miner, mining_encoder = build_miner(cfg, encoder_cfg, accelerator.device, pair_teacher)
    if miner is None and negatives is None and cfg.get("negatives") is not None:
        negatives = instantiate(cfg.negatives, _convert_="all").negatives(train_set, train_qids)
    schedule = objective.schedule(parts, negatives, tcfg.batch_size * accelerator.num_processes, miner is not None)
    if state.clusters is not None:  # the query clusters of the last re-clustering before the checkpoint
        schedule.set_clusters(state.clusters)

    evaluator = Evaluator(measures=list(cfg.measures), depth=int(cfg.depth))
    retriever = objective.eval_retriever(dense, cache)
    test_sets = [instantiate(cfg.data.eval_sets[n], _convert_="all") for n in test_names]
    dev = dev_set(train_set, dev_qids, tcfg.dev_corpus_size, name=f"{train_set.name}-dev") if dev_qids else None
    callbacks = [MinerCallback(miner, mining_encoder)] if miner is not None else []
    callbacks += objective.callbacks() + [
        LogCallback(out_dir, tcfg.log_every, tcfg.tensorboard),
        EvalCallback(out_dir, evaluator, retriever, dev, test_sets, tcfg.eval_every, tcfg.zero_shot_eval,
                     tcfg.select_metric),
        export_callback(cfg, out_dir, retriever),
        CheckpointCallback(out_dir, tcfg.save_every, tcfg.keep_checkpoints, {RESUME_CONFIG: run_config}),
    ]
    return Trainer(tcfg, accelerator, model, optimizer, scheduler, schedule, callbacks, state, negatives)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> dict:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    trainer = build_trainer(cfg, out_dir)
    if trainer.accelerator.is_main_process:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer.train()
    if trainer.accelerator.is_main_process:
        write_summary(trainer, out_dir, time.perf_counter() - start)
    final = next((cb.final for cb in trainer.callbacks if isinstance(cb, EvalCallback)), {})
    trainer.accelerator.end_training()
    return final


if __name__ == "__main__":
    main()
