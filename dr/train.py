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

from dr.config import CONFIG_DIR, eval_set_names, register_resolvers
from dr.data.groups import GroupSchedule, split_dev
from dr.data.tas import TasConfig, TasSchedule
from dr.data.teacher import read_teacher_scores
from dr.dist import all_gather_object, local_only
from dr.encoding.cache import EmbeddingCache, reused_from_earlier_runs
from dr.eval.dev import dev_set
from dr.eval.evaluator import Evaluator
from dr.io import atomic_write_json
from dr.index import IndexConfig, kmeans_assign
from dr.mining.miner import Miner
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.dual_encoder import DualEncoder
from dr.models.precision import resolve_precision
from dr.quantizer import ProductQuantizer, QuantizerConfig, build_pq_index, load_pq_index
from dr.quantizer.objective import JPQObjective
from dr.ranker.ar2 import AR2Config, AR2Objective, AR2PhaseCallback
from dr.ranker.objective import RankerObjective, RankerObjectiveConfig
from dr.report import METRICS_FILE, write_curves
from dr.retrievers.bm25 import BM25Retriever
from dr.retrievers.dense import DenseRetriever
from dr.retrievers.pq import PQRetriever
from dr.retrievers.rerank import RerankRetriever
from dr.trainer.adore import AdoreObjective
from dr.trainer.callbacks import CheckpointCallback, EvalCallback, LogCallback, MinerCallback
from dr.trainer.checkpoint import TrainState, load_checkpoint, resolve_resume, resume_requested
from dr.trainer.config import TrainerConfig
from dr.trainer.distill import DistillConfig, DistillObjective, LiveTeacher
from dr.trainer.loop import Trainer
from dr.trainer.objective import ContrastiveObjective
from dr.trainer.resume_check import RESUME_CONFIG, check_resume_config, resume_config
from dr.trainer.run_logs import rewind_logs

logger = logging.getLogger(__name__)
register_resolvers()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: DictConfig, out_dir: Path) -> Trainer:
    tcfg: TrainerConfig = instantiate(cfg.trainer, _convert_="all")
    objective_cfg = instantiate(cfg.objective, _convert_="all") if cfg.get("objective") is not None else None
    test_names = eval_set_names(cfg.data, cfg.test_sets, "test_sets")  # a typo fails before anything loads
    ranker_cfg = _ranker_config(cfg, objective_cfg)
    _check_ar2(cfg, tcfg, objective_cfg)
    # validated before anything heavy is loaded; a cross-encoder run trains no dual encoder
    encoder_cfg = instantiate(cfg.model, _convert_="all") if ranker_cfg is None else None
    loss = instantiate(cfg.loss, _convert_="all")
    precision = resolve_precision(tcfg.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu", "training")
    accelerator = Accelerator(
        mixed_precision=precision.accelerate,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=encoder_cfg is not None and not encoder_cfg.shared
            or isinstance(objective_cfg, AR2Config))],  # AR2: one of its two models is idle each step
    )
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
    if cfg.get("sampler") is not None and cfg.get("teacher") is None:
        raise ValueError("sampler=... draws pairs by teacher margin: choose a teacher=... too")
    encoder = DualEncoder(encoder_cfg) if ranker_cfg is None else CrossEncoder(ranker_cfg)
    if tcfg.gradient_checkpointing:
        _enable_gradient_checkpointing(encoder)
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype) if cfg.cache_embeddings else None
    objective = _build_objective(cfg, tcfg, encoder, loss, train_set, train_qids, cache, accelerator, out_dir)
    head_lr = objective_cfg.head_lr if isinstance(objective_cfg, RankerObjectiveConfig) else None
    centroids = ((objective.config.centroid_lr, objective.config.centroid_weight_decay)
                 if isinstance(objective, JPQObjective) else None)
    groups = (_ar2_param_groups(objective, tcfg.weight_decay) if isinstance(objective, AR2Objective)
              else _param_groups(objective, tcfg.weight_decay, head_lr, centroids))
    optimizer = instantiate(cfg.optimizer, _convert_="all")(params=groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * tcfg.max_steps), tcfg.max_steps)
    # The scheduler is not prepared: Accelerate would step it once per process, since it assumes a
    # dataloader split across processes; our schedule counts global optimizer steps.
    model, optimizer = accelerator.prepare(objective, optimizer)

    state, negatives = TrainState(), None
    if resume_from is not None:
        state, negatives = load_checkpoint(resume_from, accelerator.unwrap_model(model), optimizer, scheduler,
                                           accelerator.process_index)
    miner, mining_encoder = _build_miner(cfg, encoder_cfg, accelerator)
    if miner is None and negatives is None and cfg.get("negatives") is not None:
        negatives = instantiate(cfg.negatives, _convert_="all").negatives(train_set, train_qids)
    global_batch = tcfg.batch_size * accelerator.num_processes
    if isinstance(objective, DistillObjective):
        schedule = _tas_schedule(cfg, tcfg, objective, train_set, train_qids, global_batch)
    else:
        schedule = GroupSchedule(train_set, train_qids, negatives, tcfg.negatives_per_query, global_batch,
                                 tcfg.seed, mined=miner is not None)

    if tcfg.select_metric not in cfg.measures:
        raise ValueError(f"trainer.select_metric={tcfg.select_metric!r} is not in measures={list(cfg.measures)}")
    evaluator = Evaluator(measures=list(cfg.measures), depth=int(cfg.depth))
    retriever = _eval_retriever(cfg, objective, objective_cfg, cache)
    test_sets = [instantiate(cfg.data.eval_sets[n], _convert_="all") for n in test_names]
    dev = dev_set(train_set, dev_qids, tcfg.dev_corpus_size, name=f"{train_set.name}-dev") if dev_qids else None
    callbacks = [MinerCallback(miner, mining_encoder)] if miner is not None else []
    callbacks += [AR2PhaseCallback(objective.config)] if isinstance(objective, AR2Objective) else []
    callbacks += [
        LogCallback(out_dir, tcfg.log_every, tcfg.tensorboard),
        EvalCallback(out_dir, evaluator, retriever, dev, test_sets, tcfg.eval_every, tcfg.zero_shot_eval,
                     tcfg.select_metric, **_export_index(cfg, retriever)),
        CheckpointCallback(out_dir, tcfg.save_every, tcfg.keep_checkpoints, {RESUME_CONFIG: run_config}),
    ]
    return Trainer(tcfg, accelerator, model, optimizer, scheduler, schedule, callbacks, state, negatives)


def _export_index(cfg: DictConfig, retriever) -> dict:
    """`export.index=true`: the trained passage tower's faiss index of `export.corpus` (an eval set name;
    default the first eval set) goes into the export beside the encoder."""
    export = cfg.get("export") or {}
    if not export.get("index"):
        return {}
    if not isinstance(retriever, DenseRetriever):
        raise ValueError("export.index=true writes a dense index: it needs a dual encoder evaluated with "
                         "retriever=dense (JPQ exports its own PQ index)")
    name = export.get("corpus") or next(iter(cfg.data.eval_sets))
    if name not in cfg.data.eval_sets:
        raise ValueError(f"export.corpus={name!r} is not an eval set of data={cfg.data.name}; known: "
                         f"{list(cfg.data.eval_sets)}")
    config = dataclasses.replace(retriever.index, factory=export.get("factory") or "Flat")
    return {"export_index": config, "export_corpus": instantiate(cfg.data.eval_sets[name], _convert_="all")}


def _ranker_config(cfg: DictConfig, objective_cfg) -> CrossEncoderConfig | None:
    """The cross-encoder to train when `objective` is the ranker's listwise objective, else None."""
    if not isinstance(objective_cfg, RankerObjectiveConfig):
        return None
    if cfg.get("ranker") is None:
        raise ValueError("objective=ranker trains a cross-encoder: choose one with ranker=... (e.g. ranker=minilm)")
    if cfg.get("miner") is not None:
        raise ValueError("objective=ranker takes its candidates from negatives=bm25 or negatives=file, not a miner")
    if cfg.get("teacher") is not None or cfg.get("sampler") is not None:
        raise ValueError("objective=ranker trains a cross-encoder from labels: set teacher=null sampler=null")
    return instantiate(cfg.ranker, _convert_="all")


def _check_ar2(cfg: DictConfig, tcfg: TrainerConfig, objective_cfg) -> None:
    """objective=ar2 needs a ranker and a miner refreshing between AR2 iterations; checked before loading."""
    if not isinstance(objective_cfg, AR2Config):
        return
    if cfg.get("ranker") is None:
        raise ValueError("objective=ar2 trains a cross-encoder beside the retriever: choose it with ranker=... "
                         "(e.g. ranker=scifact_teacher or ranker=minilm)")
    for group in ("negatives", "teacher", "sampler", "quantizer"):
        if cfg.get(group) is not None:
            raise ValueError(f"objective=ar2 takes its candidates from the retriever's refreshed index "
                             f"(miner=dynamic): set {group}=null")
    if cfg.get("miner") is None:
        raise ValueError("objective=ar2 takes its candidates from the retriever's refreshed index: set miner=dynamic")
    miner_cfg = instantiate(cfg.miner, _convert_="all")
    if miner_cfg.model:
        raise ValueError("objective=ar2 mines with the retriever it trains: set miner.model=null")
    objective_cfg.check_refresh(miner_cfg.refresh_every)
    if tcfg.negatives_per_query < 1:
        raise ValueError("objective=ar2 ranks each positive among retrieved negatives: set "
                         "trainer.negatives_per_query >= 1")
    if tcfg.grad_cache_chunk:
        raise ValueError("objective=ar2 scores whole groups per step: set trainer.grad_cache_chunk=0")


def _ar2_param_groups(objective: AR2Objective, weight_decay: float) -> list[dict]:
    """The retriever's groups at trainer.lr and the ranker's at objective.ranker_lr (AR2 authors: 1e-5, 1e-6)."""
    ranker = _param_groups(objective.ranker, weight_decay)
    if objective.config.ranker_lr is not None:
        ranker = [{**g, "lr": objective.config.ranker_lr} for g in ranker]
    return _param_groups(objective.retriever, weight_decay) + ranker


def _enable_gradient_checkpointing(model: DualEncoder | CrossEncoder) -> None:
    # non-reentrant: a shared tower is used twice per step, which reentrant checkpointing under DDP
    # rejects ("mark a variable ready only once")
    kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if isinstance(model, CrossEncoder):
        model.model.gradient_checkpointing_enable(**kwargs)
        return
    for tower in {id(model.query_model): model.query_model, id(model.passage_model): model.passage_model}.values():
        tower.gradient_checkpointing_enable(**kwargs)


def _eval_retriever(cfg: DictConfig, objective: torch.nn.Module, objective_cfg, cache):
    """Dense retrieval with the model being trained, BM25 reranked by the cross-encoder being trained,
    or (JPQ) the query encoder over the PQ index with its current centroids."""
    model = objective.encoder
    if isinstance(model, CrossEncoder):
        return RerankRetriever(BM25Retriever(), model, depth=objective_cfg.rerank_depth)
    if isinstance(objective, JPQObjective):
        return PQRetriever(model, quantizer=objective.quantizer, cache=cache)
    retriever = instantiate(cfg.retriever, _convert_="all")
    if not isinstance(retriever, functools.partial):
        raise ValueError("dr.train evaluates the model it trains: use retriever=dense (BM25 runs in dr.evaluate)")
    return retriever(encoder=model, cache=cache)


def _build_objective(cfg: DictConfig, tcfg: TrainerConfig, encoder: DualEncoder, loss, train_set, train_qids,
                     cache: EmbeddingCache | None, accelerator: Accelerator, out_dir: Path) -> torch.nn.Module:
    """Contrastive (default), the cross-encoder's listwise objective (`objective=ranker`), ADORE
    (`objective=adore`: query tower against a fixed passage index), JPQ (`quantizer=jpq`) or AR2
    (`objective=ar2`: the retriever and a cross-encoder ranker in alternating phases)."""
    if cfg.get("quantizer") is not None:
        return _jpq_objective(cfg, encoder, train_set, train_qids, cache, accelerator, out_dir)
    ar2 = instantiate(cfg.objective, _convert_="all") if cfg.get("objective") is not None else None
    if isinstance(ar2, AR2Config):  # the retriever and the cross-encoder of `ranker=`, trained in turns
        ranker = CrossEncoder(instantiate(cfg.ranker, _convert_="all"))
        if tcfg.gradient_checkpointing:
            _enable_gradient_checkpointing(ranker)
        return AR2Objective(encoder, ranker, ar2)
    if cfg.get("objective") is None and cfg.get("teacher") is None:
        return ContrastiveObjective(encoder, loss, cross_device=tcfg.cross_device)
    if isinstance(encoder, CrossEncoder):
        return RankerObjective(encoder)
    if cfg.get("teacher") is not None:
        return _distill_objective(cfg, tcfg, encoder, train_set)
    if cfg.get("miner") is not None or cfg.get("negatives") is not None:
        raise ValueError("objective=adore retrieves its own negatives at every step: set miner=null negatives=null")
    adore_cfg = instantiate(cfg.objective, _convert_="all")
    emb = DenseRetriever(encoder, cache=cache).corpus_matrix(train_set.corpus)  # sharded, then gathered
    corpus = train_set.corpus
    positives = {q: train_set.positives(q) for q in train_qids}
    return AdoreObjective(encoder, adore_cfg, emb, corpus.ids[corpus.active_rows], positives)


def _jpq_objective(cfg: DictConfig, encoder: DualEncoder, train_set, train_qids, cache: EmbeddingCache | None,
                   accelerator: Accelerator, out_dir: Path) -> JPQObjective:
    """JPQ: OPQ + PQ trained once on the starting passage tower's embeddings of the training corpus (or read
    from `quantizer.init_from`), written to RUN/pq-init/ (the plain OPQ+PQ baseline; a resumed run reuses
    it, so codes and rotation never change within a run)."""
    for group in ("miner", "negatives", "objective", "teacher", "sampler"):
        if cfg.get(group) is not None:
            raise ValueError(f"quantizer=... retrieves its own negatives from the PQ index: set {group}=null")
    qcfg: QuantizerConfig = instantiate(cfg.quantizer, _convert_="all")
    corpus = train_set.corpus
    init = Path(qcfg.init_from) if qcfg.init_from else out_dir / "pq-init" / "index.faiss"
    with accelerator.main_process_first():  # the main process builds and writes it; the others read it
        if not init.exists():
            if qcfg.init_from:
                raise FileNotFoundError(f"quantizer.init_from={qcfg.init_from} does not exist")
            with local_only():  # the others wait at main_process_first's barrier: no collective here
                emb = DenseRetriever(encoder, cache=cache).corpus_matrix(corpus)
            start = time.perf_counter()
            index = build_pq_index(emb, qcfg)
            logger.info("OPQ + PQ (%s) over %d passages trained in %.1fs", qcfg.factory(), len(emb),
                        time.perf_counter() - start)
            ProductQuantizer(index, corpus.ids[corpus.active_rows].tolist(), corpus.fingerprint).export(init.parent,
                                                                                                   init.name)
        index, docids, fingerprint = load_pq_index(init)
    if fingerprint != corpus.fingerprint:
        raise ValueError(f"{init} was built on another corpus than {train_set.name}'s")
    search = IndexConfig(factory="IVF1,PQ", device=qcfg.device)
    quantizer = ProductQuantizer(index, docids, fingerprint, search)
    positives = {q: train_set.positives(q) for q in train_qids}
    return JPQObjective(encoder, qcfg, quantizer, positives)


def _distill_objective(cfg: DictConfig, tcfg: TrainerConfig, encoder: DualEncoder, train_set) -> DistillObjective:
    """TAS-B's dual-teacher objective: teacher=... names the score file and the live in-batch teacher."""
    for group in ("miner", "negatives", "objective"):
        if cfg.get(group) is not None:
            raise ValueError(f"teacher=... draws its pairs from the teacher's scores: set {group}=null")
    if cfg.get("sampler") is None:
        raise ValueError("teacher=... needs sampler=tas_balanced (pairs are drawn from the teacher's margins)")
    distill_cfg: DistillConfig = instantiate(cfg.teacher, _convert_="all")
    scores = read_teacher_scores(distill_cfg.scores, strict=distill_cfg.strict, fmt=distill_cfg.format)
    live = None
    if distill_cfg.inbatch_model and distill_cfg.inbatch_weight:
        ranker_cfg = CrossEncoderConfig(distill_cfg.inbatch_model, max_length=distill_cfg.inbatch_max_length,
                                        show_progress=False)
        live = LiveTeacher(CrossEncoder(ranker_cfg))
    return DistillObjective(encoder, distill_cfg, train_set.corpus, scores, live, tcfg.seed)


def _tas_schedule(cfg: DictConfig, tcfg: TrainerConfig, objective: DistillObjective, train_set, train_qids,
                  global_batch: int) -> TasSchedule:
    """Balanced topic-aware batches: the training queries clustered once on a fixed encoder's embeddings.
    Every process uses rank 0's clusters, so all compute the same global batches."""
    tas_cfg: TasConfig = instantiate(cfg.sampler, _convert_="all")
    clusters = None
    if tas_cfg.clusters:
        encoder = objective.encoder
        if tas_cfg.cluster_model:
            encoder = DualEncoder(dataclasses.replace(encoder.config, name_or_path=tas_cfg.cluster_model, shared=True))
        emb = encoder.encode_queries([train_set.queries[q] for q in train_qids], desc="cluster queries")
        k = min(tas_cfg.clusters, len(train_qids))
        clusters = kmeans_assign(emb, k, seed=tcfg.seed, spherical=encoder.score_kind == "cosine")
        clusters = all_gather_object(clusters)[0]
        logger.info("clustered %d training queries into %d topics", len(train_qids), k)
    return TasSchedule(train_set, train_qids, objective.teacher, clusters, tas_cfg, tcfg.negatives_per_query,
                       global_batch, tcfg.seed)


def _build_miner(cfg: DictConfig, encoder_cfg, accelerator: Accelerator) -> tuple[Miner | None, DualEncoder | None]:
    """The miner and, when `miner.model` names one, the fixed model it mines with (STAR's warm-up model)."""
    if cfg.get("miner") is None:
        return None, None
    if cfg.get("negatives") is not None:
        raise ValueError("choose one source of hard negatives: negatives=... or miner=..., not both")
    miner_cfg = instantiate(cfg.miner, _convert_="all")
    cache = (EmbeddingCache(Path(cfg.cache_dir) / "embeddings", memory_entries=0, dtype=cfg.cache_dtype)
             if cfg.cache_embeddings else None)
    mining_encoder = None
    if miner_cfg.model:  # never trained
        mining_encoder = DualEncoder(dataclasses.replace(encoder_cfg, name_or_path=miner_cfg.model, shared=True))
        mining_encoder.to(accelerator.device).eval().requires_grad_(False)
    return Miner(miner_cfg, cache), mining_encoder


def _param_groups(model: torch.nn.Module, weight_decay: float, head_lr: float | None = None,
                  centroids: tuple[float, float] | None = None) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT recipe); shared towers counted once. With
    `head_lr`, a cross-encoder's new scoring head (pooler and classifier) gets its own learning rate;
    with `centroids` = (lr, weight decay), so do JPQ's PQ centroids."""
    decay, no_decay, head, cent, seen = [], [], [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if head_lr and (".classifier." in name or ".pooler." in name):
            head.append(p)
        elif centroids and name.endswith("quantizer.centroids"):
            cent.append(p)
        else:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": head, "weight_decay": 0.0, "lr": head_lr}] if head else []
    return groups + ([{"params": cent, "lr": centroids[0], "weight_decay": centroids[1]}] if cent else [])


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
        atomic_write_json(out_dir / "timings.json", {"wall_s": wall, "steps": trainer.state.step,
                                              "world_size": trainer.accelerator.num_processes,
                                              "refreshes": len(trainer.refreshes), "refresh_s": refresh_s,
                                              "train_loop_s": trainer.loop_s,
                                              "embedding_cache_reused": reused_from_earlier_runs(),
                                              "refresh_fraction_of_training": refresh_s / trainer.loop_s
                                              if trainer.loop_s else 0.0})
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
    final = next((cb.final for cb in trainer.callbacks if isinstance(cb, EvalCallback)), {})
    trainer.accelerator.end_training()
    return final


if __name__ == "__main__":
    main()
