"""Teacher supervision for the dual encoder: TAS-B's dual-teacher loss (Hofstätter et al., SIGIR 2021).

Pairwise teacher: static scores from a file (`dr.score` writes them) give each sampled (positive,
negative) pair its margin; the student is trained with Margin-MSE on it (or KL over the query's group).
In-batch teacher: a model scored live on the batch (paper: ColBERT; here any cross-encoder) gives
margins between each query's positive and the other queries' passages; Margin-MSE on those is added
with weight `inbatch_weight` (paper: alpha = 0.75). Without a live model, in-batch pairs the score file
happens to cover are used. Loss = L_pair + alpha * L_inb (Eq. 8); `pair_weight` scales L_pair (ablations).

Optionally the labels too: `label_weight` (lambda) adds the contrastive loss of `objective=contrastive`
(InfoNCE over every in-batch passage, the group's labelled positive as the target), so
L = L_pair + alpha * L_inb + lambda * L_label. TAS-B's teachers were themselves trained on the labels; a
teacher that never saw them (`teacher=fusion`) can rank a query's labelled positive below its negatives, and
the label term keeps the student anchored to the judgements while it learns the teacher's ordering.

`fixed_passages`: the passage tower stays the starting model and only the query tower trains (ADORE's
setting, Zhan et al. 2021, with TAS-B's teacher in place of ADORE's ranking loss). The passages' embeddings
are encoded once (from the embedding cache when the model was seen before), a step encodes only its
queries, and the label term's softmax runs over the whole corpus instead of the batch. Needs
model.shared=false; the whole (N, H) matrix is held in memory, so it is meant for corpora of SciFact's size.
With it, `anchor_weight` can add a term that keeps other queries (`anchor_queries`, e.g. MS MARCO questions)
embedded where the starting model put them, against forgetting outside the training domain.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.data.corpus import CorpusStore
from dr.data.errors import ReadPolicy
from dr.data.groups import Group
from dr.data.msmarco import read_queries_tsv
from dr.data.tas import TasConfig, TasSchedule
from dr.data.teacher import TeacherScores, read_teacher_scores
from dr.encoding.sharded import corpus_matrix
from dr.losses.contrastive import own_group_mask, softmax_cross_entropy
from dr.losses.distill import inbatch_margin_mse, kl_distill, pairwise_margin_mse
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.dual_encoder import DualEncoder
from dr.objectives.base import Objective, ObjectiveConfig, Parts, batch_draw, cluster_queries, shared_tower_check

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """`scores`: teacher-score file (tasb pair TSV, `qid pid score` TSV or JSONL; `format` auto-detects).
    `inbatch_model`: a cross-encoder scored live as the in-batch teacher (null: the file's scores);
    `inbatch_pairs_per_query`: a random k of each query's in-batch passages get teacher scores (null:
    all of them, as in the paper; k bounds the live teacher's cost on a CPU). `label_weight`: weight of the
    labels' InfoNCE term (0: TAS-B as published); `pair_weight`: the pairwise term's (1: as published; 0 for
    ablations). `fixed_passages`: train the query tower only, against the starting model's passage
    embeddings (model.shared=false). `anchor_queries` (`qid<TAB>text`), `anchor_weight`, `anchor_per_step`:
    with fixed passages, keep those queries' embeddings near the starting model's (`anchor_loss`)."""

    scores: str
    format: Literal["auto", "tasb", "tsv", "jsonl"] = "auto"
    strict: bool = True
    loss: Literal["margin_mse", "kl"] = "margin_mse"
    kl_temperature: float = 1.0
    inbatch_weight: float = 0.75
    inbatch_model: str | None = None
    inbatch_max_length: int = 256
    inbatch_pairs_per_query: int | None = None
    label_weight: float = 0.0
    pair_weight: float = 1.0
    fixed_passages: bool = False
    anchor_queries: str | None = None
    anchor_weight: float = 0.0
    anchor_per_step: int = 16

    def __post_init__(self) -> None:
        if self.loss not in ("margin_mse", "kl"):
            raise ValueError(f"teacher.loss must be margin_mse or kl, got {self.loss!r}")
        if self.anchor_weight and not (self.anchor_queries and self.fixed_passages and self.anchor_per_step > 0):
            raise ValueError("teacher.anchor_weight needs teacher.anchor_queries, teacher.fixed_passages=true (the "
                             "passage tower is the starting model the anchor compares with) and anchor_per_step > 0")
        if min(self.inbatch_weight, self.label_weight, self.pair_weight, self.anchor_weight) < 0 \
                or self.kl_temperature <= 0:
            raise ValueError("teacher.inbatch_weight, label_weight, pair_weight and anchor_weight must be >= 0 and "
                             "teacher.kl_temperature > 0")
        if self.inbatch_pairs_per_query is not None and self.inbatch_pairs_per_query <= 0:
            raise ValueError(f"teacher.inbatch_pairs_per_query must be > 0 or null, got {self.inbatch_pairs_per_query}")

    def teacher_scores(self, encoder: DualEncoder, parts: Parts, passages: np.ndarray | None = None) -> TeacherScores:
        """The pairwise teacher: the score file (`teacher=fusion` computes its scores instead, from `passages`,
        the encoder's corpus embeddings, when given)."""
        return read_teacher_scores(self.scores, strict=self.strict, fmt=self.format)


class LiveTeacher:
    """A frozen cross-encoder that scores in-batch pairs. Deliberately not an nn.Module attribute of the
    objective: it is neither trained, nor saved in checkpoints, nor wrapped by DDP."""

    def __init__(self, ranker: CrossEncoder) -> None:
        self.ranker = ranker.eval().requires_grad_(False)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return self.ranker.score(queries, passages, desc="in-batch teacher")


class DistillObjective(Objective):
    """`batch(groups)` builds the batch (texts and teacher tensors); `forward(**inputs)` -> (loss, logs).
    Groups must carry teacher scores (`TasSchedule`). Each process distils over its own batch."""

    def __init__(self, encoder: DualEncoder, config: DistillConfig, corpus: CorpusStore, teacher: TeacherScores,
                 live: LiveTeacher | None = None, seed: int = 0, fixed: np.ndarray | None = None,
                 positives: dict[str, list[str]] | None = None) -> None:
        """`fixed`: (N, H) passage embeddings of the corpus's active rows (config.fixed_passages);
        `positives`: every training query's labelled passages, masked out of the corpus-wide label softmax."""
        super().__init__()
        self.encoder, self.config, self.corpus = encoder, config, corpus
        self.teacher, self.live, self.seed = teacher, live, seed
        self.fixed = None
        if config.fixed_passages:
            if fixed is None:
                raise ValueError("teacher.fixed_passages: pass the corpus's passage embeddings")
            if encoder.passage_model is encoder.query_model:
                raise ValueError("teacher.fixed_passages trains the query tower alone: set model.shared=false")
            encoder.passage_model.requires_grad_(False)
            # not a buffer: never trained, saved or broadcast by DDP (as ADORE's FixedIndex)
            self.fixed = torch.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32))
            ids = corpus.ids[corpus.active_rows]
            self.row_of = {str(d): i for i, d in enumerate(ids)}
            self.positive_rows = {q: [self.row_of[p] for p in ps if p in self.row_of]
                                  for q, ps in (positives or {}).items()}
        self.anchors: list[str] = []
        self.anchor_ref: dict[str, torch.Tensor] = {}  # text -> the starting model's embedding (it never changes)
        if config.anchor_weight:  # `qid<TAB>text` rows; a bad row raises naming file and line
            self.anchors = list(read_queries_tsv(config.anchor_queries, ReadPolicy(strict=True)).values())

    def batch(self, groups: Sequence[Group]) -> dict:
        if any(g.teacher is None for g in groups):
            raise ValueError("distillation needs groups with teacher scores (sampler=tas_balanced)")
        pids = [pid for g in groups for pid in g.passage_ids]
        inbatch = self.inbatch_teacher(groups, pids) if self.config.inbatch_weight else None
        out = {"queries": [g.query for g in groups],
               "teacher": torch.tensor([g.teacher for g in groups], dtype=torch.float32), "inbatch": inbatch}
        if self.fixed is None:
            return {**out, "passages": self.corpus.texts(self.corpus.rows_of(pids))}
        rows = torch.tensor([self.row_of[p] for p in pids], dtype=torch.long)
        others = torch.zeros(len(groups), len(self.fixed), dtype=torch.bool)  # other labelled positives
        for i, g in enumerate(groups):
            others[i, self.positive_rows.get(g.qid, [])] = True
            others[i, rows[i * len(g.passage_ids)]] = False
        return {**out, "passages": rows, "other_positives": others, "anchors": self.anchor_texts(groups)}

    def anchor_texts(self, groups: Sequence[Group]) -> list[str]:
        """`anchor_per_step` anchor queries, drawn without replacement, seeded by the batch's content (as
        `_cells`), so a rerun or a resumed run draws the same ones."""
        if not self.anchors:
            return []
        take = batch_draw(groups, len(self.anchors), self.config.anchor_per_step, self.seed, stream=1)
        return [self.anchors[i] for i in take]

    def inbatch_teacher(self, groups: list[Group], pids: list[str]) -> torch.Tensor:
        """(B, B*G) in-batch teacher scores, NaN where none is known or none was sampled."""
        group = len(groups[0].passage_ids)
        out = np.full((len(groups), len(pids)), np.nan, dtype=np.float32)
        cells = self._cells(groups, pids, group)
        if self.live is not None:
            texts = self.corpus.texts(self.corpus.rows_of([pids[j] for _, j in cells]))
            values = self.live.score([groups[i].query for i, _ in cells], texts)
        else:
            values = [self.teacher.score(groups[i].qid, pids[j]) for i, j in cells]
        for (i, j), v in zip(cells, values):
            out[i, j] = np.nan if v is None else v
        return torch.from_numpy(out)

    def _cells(self, groups: list[Group], pids: list[str], group: int) -> list[tuple[int, int]]:
        """(query, column) cells the in-batch teacher scores: each query's positive and its (sampled)
        other-group columns. Sampling is seeded by the batch content, so reruns repeat it."""
        k = self.config.inbatch_pairs_per_query
        key = zlib.crc32("\t".join(g.qid + ":" + ",".join(g.passage_ids) for g in groups).encode())
        rng = np.random.default_rng([self.seed, key])
        cells = []
        for i in range(len(groups)):
            others = [j for j in range(len(pids)) if j // group != i]
            if k is not None and k < len(others):
                others = sorted(rng.choice(others, size=k, replace=False).tolist())
            cells += [(i, i * group)] + [(i, j) for j in others]
        return cells

    def forward(self, queries: Sequence[str], passages: Sequence[str] | torch.Tensor, teacher: torch.Tensor,
                inbatch: torch.Tensor | None, other_positives: torch.Tensor | None = None,
                anchors: Sequence[str] = ()) -> tuple[torch.Tensor, dict]:
        """B queries, B*G passages (group-major, positive first; their rows in the fixed matrix when
        fixed_passages), teacher (B, G), inbatch (B, B*G) or None, other_positives (B, N) with fixed passages."""
        q = self.encoder.embed("query", self.encoder.tokenize("query", queries))  # (B, H)
        if self.fixed is None:
            p = self.encoder.embed("passage", self.encoder.tokenize("passage", passages))  # (B*G, H)
        else:
            self.fixed = self.fixed.to(q.device)
            p = self.fixed[passages.to(q.device)].to(q.dtype)  # (B*G, H), no gradient
        scores = self.encoder.score(q, p)  # (B, B*G)
        b, group = q.shape[0], p.shape[0] // q.shape[0]
        targets = torch.arange(b, device=scores.device) * group
        own = own_group_mask(targets, group, scores.shape[1])  # (B, B*G)
        student = scores[own].view(b, group)  # (B, G) each query's own group
        teacher = teacher.to(scores.device)
        if self.config.loss == "kl":
            pair = kl_distill(student, teacher, self.config.kl_temperature)
        else:
            pair = pairwise_margin_mse(student, teacher)
        loss, logs = self.config.pair_weight * pair, {"loss_pair": float(pair.detach())}
        if inbatch is not None:
            inb = inbatch_margin_mse(scores, inbatch.to(scores.device), targets, own)
            loss = loss + self.config.inbatch_weight * inb
            logs["loss_inbatch"] = float(inb.detach())
        if self.config.label_weight and self.fixed is None:
            label = softmax_cross_entropy(scores, targets)  # the positive against every in-batch passage
        elif self.config.label_weight:  # the positive against the whole corpus, its other positives left out
            everything = self.encoder.score(q, self.fixed.to(q.dtype))  # (B, N)
            everything = everything.masked_fill(other_positives.to(q.device), float("-inf"))
            label = softmax_cross_entropy(everything, passages.to(q.device)[targets])
        if self.config.label_weight:
            loss = loss + self.config.label_weight * label
            logs["loss_label"] = float(label.detach())
        if anchors:
            anchor = self.anchor_loss(anchors)
            loss = loss + self.config.anchor_weight * anchor
            logs["loss_anchor"] = float(anchor.detach())
        with torch.no_grad():
            logs["train_acc"] = float((student.argmax(dim=1) == 0).float().mean())
        logs["loss"] = float(loss.detach())
        return loss, logs

    def anchor_loss(self, texts: Sequence[str]) -> torch.Tensor:
        """Relative squared distance between the trained query tower's embeddings of `texts` and the starting
        model's (the frozen passage tower in eval mode, given query tokenization): sum ||q - q0||^2 / sum ||q0||^2.
        It keeps queries unlike the training ones (teacher.anchor_queries, e.g. MS MARCO questions) where the
        starting model put them while the claims move."""
        batch = self.encoder.tokenize("query", texts)
        q = self.encoder.embed("query", batch)
        todo = [t for t in dict.fromkeys(texts) if t not in self.anchor_ref]
        if todo:  # the frozen tower's embedding of a text, without dropout, computed once and kept
            tower = self.encoder.passage_model
            training = tower.training
            tower.eval()
            try:
                with torch.no_grad():
                    fresh = self.encoder.embed("passage", self.encoder.tokenize("query", todo)).float().cpu()
            finally:
                tower.train(training)
            self.anchor_ref.update(zip(todo, fresh))
        q0 = torch.stack([self.anchor_ref[t] for t in texts]).to(device=q.device, dtype=q.dtype)
        return ((q - q0) ** 2).sum() / (q0 ** 2).sum().clamp_min(1e-12)

    def schedule(self, parts: Parts, negatives, global_batch: int, mined: bool) -> TasSchedule:
        """Balanced topic-aware batches: the training queries clustered once on a fixed encoder's embeddings.
        Every process uses rank 0's clusters, so all compute the same global batches."""
        tcfg = parts.trainer
        tas_cfg: TasConfig = instantiate(parts.cfg.sampler, _convert_="all")
        clusters = None
        if tas_cfg.clusters:
            k = min(tas_cfg.clusters, len(parts.train_qids))
            clusters = cluster_queries(self.encoder, parts.train_set, parts.train_qids, k, tcfg.seed,
                                       tas_cfg.cluster_model)
            logger.info("clustered %d training queries into %d topics", len(parts.train_qids), k)
        return TasSchedule(parts.train_set, parts.train_qids, self.teacher, clusters, tas_cfg, tcfg.negatives_per_query,
                           global_batch, tcfg.seed)


@dataclass
class DistillObjectiveConfig(ObjectiveConfig):
    """`objective=distill`: TAS-B's dual-teacher distillation. `teacher=` names the score file and the live
    in-batch teacher, `sampler=` draws the pairs by teacher margin (sampler=tas_balanced)."""

    name: ClassVar[str] = "distill"
    uses: ClassVar[frozenset[str]] = frozenset({"teacher", "sampler"})
    requires: ClassVar[dict[str, str]] = {
        "teacher": "the teacher's scores, e.g. teacher=scifact",
        "sampler": "pairs are drawn from the teacher's margins: sampler=tas_balanced"}

    def build(self, encoder: DualEncoder, parts: Parts) -> DistillObjective:
        distill_cfg: DistillConfig = instantiate(parts.cfg.teacher, _convert_="all")
        # fixed passages: the starting passage tower's embeddings, encoded once for the objective and the teacher
        fixed = corpus_matrix(encoder, parts.train_set.corpus, parts.cache) if distill_cfg.fixed_passages else None
        scores = distill_cfg.teacher_scores(encoder, parts, fixed)
        live = None
        if distill_cfg.inbatch_model and distill_cfg.inbatch_weight:
            ranker_cfg = CrossEncoderConfig(distill_cfg.inbatch_model, max_length=distill_cfg.inbatch_max_length,
                                            show_progress=False)
            live = LiveTeacher(CrossEncoder(ranker_cfg))
        return DistillObjective(encoder, distill_cfg, parts.train_set.corpus, scores, live, parts.trainer.seed,
                                fixed=fixed, positives=parts.positives if fixed is not None else None)

    def check(self, cfg: DictConfig) -> None:
        if cfg.teacher.get("fixed_passages"):
            shared_tower_check(cfg, self.name, "with teacher.fixed_passages=true trains the query tower only")
