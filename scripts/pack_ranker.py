"""Copy a cross-encoder export into data/ with float16 weights (half the bytes in git).

    python scripts/pack_ranker.py outputs/teacher/scifact-ce/export data/scifact-teacher/model

The packed model loads as float32 (`dr.models.cross_encoder.CrossEncoder` asks for it), so its scores
differ from the export's by float16 rounding only; the shipped scores are computed from the packed copy.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dr.models.export import write_dir_atomically


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    model = AutoModelForSequenceClassification.from_pretrained(args.export, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.export)

    def write(tmp: Path) -> None:
        model.half().save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for extra in ("dr_ranker.json",):
            if (args.export / extra).exists():
                shutil.copy(args.export / extra, tmp / extra)

    out = write_dir_atomically(args.out, write)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {args.export} -> {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
