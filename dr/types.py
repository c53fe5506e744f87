"""The shapes that cross package boundaries, named once.

    Qrels      {qid: {docid: grade}}               judgments (BEIR / TREC layout)
    Run        {qid: {docid: score}}               a ranking; dr.data.runs.ArrayRun is one, read lazily
    Negatives  {qid: [docid, ...]}                 mined or given negatives, best first
"""
from __future__ import annotations

from collections.abc import Mapping

Qrels = dict[str, dict[str, int]]
Run = Mapping[str, Mapping[str, float]]
Negatives = dict[str, list[str]]
