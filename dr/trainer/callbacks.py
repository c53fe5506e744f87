"""Periodic work keyed on the global step: logging, evaluation with model selection, the export,
checkpoints, miner refreshes. The trainer dispatches every event to every callback; `Callback` has a
no-op for each, so a callback defines only the events it handles."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_model, save_model

from dr.data.sources import RetrievalSet
from dr.dist import broadcast_object
from dr.eval.evaluator import Evaluator, format_table
from dr.index import IndexConfig, kmeans_assign
from dr.io import atomic_path, atomic_write_json
from dr.mining.miner import Miner
from dr.models.cross_encoder import CrossEncoder
from dr.models.dual_encoder import DualEncoder
from dr.models.export import export_encoder, export_ranker
from dr.report import METRICS_FILE, append_jsonl, metrics_records
from dr.retrievers.dense import DenseRetriever
from dr.trainer.checkpoint import save_checkpoint, save_rng_state
from dr.trainer.run_logs import LOG_LINES, count_lines

logger = logging.getLogger(__name__)
REFRESH_COSTS = ("total_s", "encode_s", "query_s", "index_s", "search_s")


class Callback:
    """The events of a training run, in order: on_train_begin; per step on_step_begin, (on_refresh when the
    miner refreshed), on_step_end; on_train_end."""

    def on_train_begin(self, trainer) -> None:
        pass

    def on_step_begin(self, trainer) -> None:
        pass

    def on_refresh(self, trainer, record: dict) -> None:
        pass

    def on_step_end(self, trainer, logs: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


@dataclass
class LogCallback(Callback):
    """`train_log.jsonl` (one line per logged step) and TensorBoard scalars when available."""

    out_dir: Path
    every: int = 1
    tensorboard: bool = True
    _writer: object = None

    def on_train_begin(self, trainer) -> None:
        if self.tensorboard and trainer.accelerator.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; TensorBoard logs are off")

    def on_step_end(self, trainer, logs: dict) -> None:
        step = trainer.state.step
        if not trainer.accelerator.is_main_process or step % self.every:
            return
        with open(self.out_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **logs}) + "\n")
        if self._writer is not None:
            for k, v in logs.items():
                self._writer.add_scalar(f"train/{k}", v, step)

    def on_refresh(self, trainer, record: dict) -> None:
        if not trainer.accelerator.is_main_process:
            return
        with open(self.out_dir / "refresh.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for k in REFRESH_COSTS:
                self._writer.add_scalar(f"refresh/{k}", record[k], record["step"])

    def on_train_end(self, trainer) -> None:
        if self._writer is not None:
            self._writer.close()


@dataclass
class EvalCallback(Callback):
    """Dev evaluation every `every` steps and at the end; the best dev `select_metric` picks the model
    that the test sets and the export (ExportCallback, after this one) see (test sets are never used for
    selection)."""

    out_dir: Path
    evaluator: Evaluator
    retriever: DenseRetriever
    dev_set: RetrievalSet | None
    test_sets: Sequence[RetrievalSet]
    every: int = 0
    zero_shot: bool = False
    select_metric: str = "nDCG@10"
    final: dict = field(default_factory=dict)
    started: float | None = None  # perf_counter at train begin (set then when None): metrics.jsonl's elapsed_s

    def _evaluate(self, trainer, sets: Sequence[RetrievalSet], tag: str,
                  per_query_dir: Path | None = None) -> dict[str, dict[str, float]]:
        """Every process takes part (a dense retriever encodes and searches one shard each); the first
        scores the runs, logs and returns the metrics, the others return {}."""
        trainer.accelerator.wait_for_everyone()
        start = time.perf_counter()
        self.retriever.encoder = trainer.objective.encoder
        if getattr(self.retriever, "cache", None) is not None:
            # to disk: the untrained model's embeddings and the final (exported) model's, which
            # dr.evaluate and runs that start from the export (ADORE, JPQ, AR2) reuse
            self.retriever.cache.persist = trainer.state.step == 0 or tag == "test"
        metrics = self.evaluator.evaluate(self.retriever, sets, per_query_dir=per_query_dir)
        if trainer.accelerator.is_main_process:
            record = {"step": trainer.state.step, "tag": tag, "metrics": metrics,
                      "eval_s": time.perf_counter() - start}
            trainer.state.history.append(record)
            with open(self.out_dir / "eval_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            elapsed = time.perf_counter() - self.started if self.started is not None else None
            append_jsonl(self.out_dir / METRICS_FILE, metrics_records(
                record["step"], tag, metrics, record["eval_s"], dict(self.evaluator.timings), elapsed,
                getattr(trainer, "refreshes", None)))
            logger.info("step %d %s:\n%s", trainer.state.step, tag, format_table(metrics))
        trainer.accelerator.wait_for_everyone()
        return metrics

    def on_train_begin(self, trainer) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        if trainer.state.best_step is not None and not (self.out_dir / "best.safetensors").exists():
            logger.warning("resumed state names dev-best step %s but %s has no best.safetensors; model "
                           "selection restarts from here", trainer.state.best_step, self.out_dir)
            trainer.state.best_metric = trainer.state.best_step = None
        if self.zero_shot and trainer.state.step == 0:
            sets = ([self.dev_set] if self.dev_set else []) + list(self.test_sets)
            metrics = self._evaluate(trainer, sets, "zero-shot")
            if trainer.accelerator.is_main_process:
                atomic_write_json(self.out_dir / "zero_shot_metrics.json", metrics)

    def on_step_end(self, trainer, logs: dict) -> None:
        step = trainer.state.step
        if self.every and self.dev_set and step % self.every == 0 and step < trainer.config.max_steps:
            self._dev(trainer)

    def _dev(self, trainer) -> None:
        # per-query values of every dev evaluation; those of the dev-best one are kept, like metrics.json
        latest = self.out_dir / "perquery" / ".latest"
        metrics = self._evaluate(trainer, [self.dev_set], "dev", latest)
        if not trainer.accelerator.is_main_process:
            return
        value = metrics[self.dev_set.name][self.select_metric]
        if trainer.state.best_metric is None or value > trainer.state.best_metric:
            trainer.state.best_metric, trainer.state.best_step = value, trainer.state.step
            with atomic_path(self.out_dir / "best.safetensors") as tmp:
                save_model(trainer.objective, str(tmp))
            name = f"{self.dev_set.name}.tsv"
            os.replace(latest / name, self.out_dir / "perquery" / name)

    def on_train_end(self, trainer) -> None:
        if self.dev_set:
            self._dev(trainer)
            if trainer.accelerator.is_main_process:  # the last dev evaluation's, if it was not the best
                shutil.rmtree(self.out_dir / "perquery" / ".latest", ignore_errors=True)
            best = self.out_dir / "best.safetensors"
            # the first process selected; every process tests (one shard each) the model it selected
            reload = broadcast_object(trainer.state.best_step != trainer.state.step and best.exists())
            if reload:
                if trainer.accelerator.is_main_process:
                    logger.info("dev %s was best at step %s (%.4f); testing and exporting that model",
                                self.select_metric, trainer.state.best_step, trainer.state.best_metric)
                load_model(trainer.objective, str(best))
        metrics = (self._evaluate(trainer, list(self.test_sets), "test", self.out_dir / "perquery")
                   if self.test_sets else {})
        if trainer.accelerator.is_main_process:
            dev = [r for r in trainer.state.history if r["tag"] == "dev" and r["step"] == trainer.state.best_step]
            final = {**(dev[-1]["metrics"] if dev else {}), **metrics}
            atomic_write_json(self.out_dir / "metrics.json", final)
            self.final = final
            print(format_table(final))


@dataclass
class ExportCallback(Callback):
    """At the end (after EvalCallback has reloaded the dev-best model): RUN/export/, the trained model in
    Hugging Face / sentence-transformers layout with the objective's own files (`export_files`: JPQ's
    index, AR2's ranker) and, with `index_corpus`, the passage tower's faiss index of that eval set."""

    out_dir: Path
    retriever: DenseRetriever | None = None  # writes the export index (index_corpus)
    index: IndexConfig | None = None
    index_corpus: RetrievalSet | None = None

    def on_train_end(self, trainer) -> None:
        objective = trainer.objective
        writers = [objective.export_files]
        if self.index_corpus is not None:  # every process: the corpus is encoded in shards
            writers.append(self.retriever.index_writer(self.index_corpus.corpus, self.index or IndexConfig()))
        if not trainer.accelerator.is_main_process:
            return
        model = objective.encoder
        if isinstance(model, CrossEncoder):
            export_ranker(model, self.out_dir / "export")
        else:
            export_encoder(model, self.out_dir / "export", _all_of(writers))


def _all_of(writers: list) -> Callable[[Path], None]:
    """One writer that runs every given writer on the export directory."""
    return lambda directory: [w(directory) for w in writers] and None


@dataclass
class MinerCallback(Callback):
    """Mines new negatives before each step the miner's schedule names (every process takes part), swaps
    them into the batch schedule, and records the cost. `encoder`: a fixed model to mine with (STAR's
    warm-up model); None mines with the model being trained."""

    miner: Miner
    encoder: DualEncoder | None = None

    def on_step_begin(self, trainer) -> None:
        step = trainer.state.step
        if not self.miner.config.due(step, trainer.state.negatives_step):
            return
        encoder = self.encoder or trainer.objective.encoder
        version = trainer.state.negatives_version + 1
        # an unchanged model's corpus embeddings are worth keeping on disk (reruns, the evaluator)
        persist = step == 0 or self.encoder is not None
        negatives, stats = self.miner.refresh(encoder, trainer.schedule.train_set, trainer.schedule.qids, step,
                                              version, persist)
        trainer.negatives = negatives
        trainer.schedule.set_negatives(negatives)
        trainer.state.negatives_version, trainer.state.negatives_step = version, step
        if getattr(trainer.schedule, "refresh_clusters", False):  # negative-aware batches: the new embeddings
            labels = kmeans_assign(self.miner.last_query_embeddings, trainer.schedule.cluster_k,
                                   seed=trainer.config.seed + version, spherical=trainer.schedule.cluster_spherical)
            labels = broadcast_object(labels)  # rank 0's, on every process
            trainer.schedule.set_clusters(labels)
            trainer.state.clusters = [int(x) for x in labels]
        record = stats.as_dict()
        trainer.refreshes.append(record)
        trainer.pending_logs.update({f"refresh_{k}": record[k] for k in REFRESH_COSTS})
        trainer.dispatch("on_refresh", record)


@dataclass
class CheckpointCallback(Callback):
    """A checkpoint every `every` steps, the latest `keep` kept. Each also holds the JSON files of `extras`
    (name -> value; the settings compared on resume) and the logs' line counts (`run_logs`)."""

    out_dir: Path
    every: int = 0
    keep: int = 2
    extras: dict[str, object] = field(default_factory=dict)

    def on_step_end(self, trainer, logs: dict) -> None:
        if self.every and trainer.state.step % self.every == 0:
            self.save(trainer)

    def save(self, trainer) -> None:
        save_rng_state(self.out_dir / "checkpoints", trainer.state.step, trainer.accelerator.process_index)
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            # the logs as they are now: what a resume from this checkpoint keeps of them (run_logs)
            save_checkpoint(self.out_dir / "checkpoints", trainer.state, trainer.objective, trainer.optimizer,
                            trainer.scheduler, trainer.negatives, self.keep,
                            extras={**self.extras, LOG_LINES: count_lines(self.out_dir)})
        trainer.accelerator.wait_for_everyone()
