"""Export a dual encoder as a directory that plain `transformers` and `sentence-transformers` load.

Layout (shared towers): the Hugging Face model and tokenizer (safetensors) plus sentence-transformers'
modules.json, sentence_bert_config.json, 1_Pooling/ and, for cosine scoring, a Normalize module.
Separate towers: the same layout under `query/` and `passage/`. sentence-transformers keeps one
max_seq_length per model, so each tower's directory records its own max length.
The towers' prefixes become sentence-transformers prompts named "query" and "passage", so
`SentenceTransformer(export).encode(texts, prompt_name="query")` embeds as dr does. A LoRA tower is written
merged (base + adapter, a plain model) with the adapter alone under `adapter/`. `model.truncate_dim` is
recorded in dr_encoder.json; sentence-transformers takes it as `SentenceTransformer(export, truncate_dim=d)`
(it cuts after its Normalize module, so its vectors are no longer of unit length: rank them by cosine, as
its similarity function does, to match dr's renormalized prefixes).
The directory is written beside the target and renamed into place, so a crash never leaves half an export.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dr.models.cross_encoder import CrossEncoder
from dr.models.dual_encoder import DualEncoder, Tower
from dr.models.lora import is_lora, merged, save_adapter

logger = logging.getLogger(__name__)


def export_encoder(encoder: DualEncoder, out_dir: str | Path, extra: Callable[[Path], None] | None = None) -> Path:
    """Write `encoder` to `out_dir` (replacing an older export atomically) and return the path.
    `extra(dir)` adds files to the same atomic export (JPQ's index)."""

    def write(tmp: Path) -> None:
        if encoder.config.shared:
            _write_tower(encoder, "passage", tmp)
        else:
            for tower in ("query", "passage"):
                _write_tower(encoder, tower, tmp / tower)
        if extra is not None:
            extra(tmp)

    out = write_dir_atomically(out_dir, write)
    logger.info("exported encoder to %s", out)
    return out


def export_ranker(ranker: CrossEncoder, out_dir: str | Path) -> Path:
    """A cross-encoder in Hugging Face layout (AutoModelForSequenceClassification, one label), atomically."""

    def write(tmp: Path) -> None:
        ranker.save(tmp)
        _dump(tmp / "dr_ranker.json", {"max_length": ranker.config.max_length})

    out = write_dir_atomically(out_dir, write)
    logger.info("exported cross-encoder to %s", out)
    return out


def write_dir_atomically(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` on a fresh directory beside `out_dir`, then rename it into place."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary directory
    try:
        write(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write_tower(encoder: DualEncoder, tower: Tower, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model = encoder.tower(tower)
    merged(model).save_pretrained(path, safe_serialization=True)
    if is_lora(model):
        save_adapter(model, path / "adapter", encoder.config.name_or_path)
    encoder.tokenizer.save_pretrained(path)
    cosine = encoder.score_kind == "cosine"
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if cosine:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    _dump(path / "modules.json", modules)
    max_len = encoder.max_length(tower)
    _dump(path / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False})
    (path / "1_Pooling").mkdir(exist_ok=True)
    _dump(
        path / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": int(model.config.hidden_size),
            "pooling_mode_cls_token": encoder.pooling == "cls",
            "pooling_mode_mean_tokens": encoder.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": encoder.pooling == "weighted_mean",
            "pooling_mode_lasttoken": encoder.pooling == "last",
        },
    )
    prompts = {t: encoder.prefix(t) for t in ("query", "passage") if encoder.prefix(t)}
    _dump(
        path / "config_sentence_transformers.json",
        {"similarity_fn_name": "cosine" if cosine else "dot", "prompts": prompts, "default_prompt_name": None},
    )
    _dump(
        path / "dr_encoder.json",
        {
            "pooling": encoder.pooling,
            "score": encoder.score_kind,
            "temperature": encoder.config.temperature,
            "query_max_length": encoder.config.query_max_length,
            "passage_max_length": encoder.config.passage_max_length,
            "query_prefix": encoder.prefix("query"),
            "passage_prefix": encoder.prefix("passage"),
            "truncate_dim": encoder.config.truncate_dim,
            "lora": dataclasses.asdict(encoder.config.lora) if encoder.config.lora is not None else None,
        },
    )


def _dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
