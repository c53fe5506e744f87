"""Teacher scores for distillation: TAS-B / Margin-MSE pair TSV, `qid pid score` TSV, or JSONL.

The pair TSV is the MS MARCO teacher file of Hofstätter et al. 2020 ("Improving Efficient Neural Ranking
Models with Cross-Architecture Knowledge Distillation"), e.g. `bertbase_cat_msmarco_train_scores.tsv`:
`score_pos<TAB>score_neg<TAB>qid<TAB>pid_pos<TAB>pid_neg`, one (positive, negative) pair a line.

That file has about 40M lines. It is converted once into a memory-mapped table (`dr.data.teacher_table`)
under the dr cache, keyed by the file (path, size, mtime) and how it is read (format, strictness, reader
version); every process and every later run maps the same arrays instead of building dicts.
"""
from __future__ import annotations

import gzip
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.lines import _open_binary, read_jsonl, read_tsv
from dr.data.prepared import cache_root, file_key, prepare_once, read_json, write_json
from dr.data.teacher_table import TablePairs, TableScores, TeacherTable, read_fast, write_from_dicts
from dr.io import atomic_path

logger = logging.getLogger(__name__)

FORMATS = ("auto", "tasb", "tsv", "jsonl")
_COLUMNS = {"tasb": 5, "tsv": 3}
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".npy", ".npz", ".joblib")
_ACCEPTED = ('convert it to a tasb TSV (score_pos score_neg qid pid_pos pid_neg), a TSV (qid pid score) '
             'or JSONL ({"qid", "pid", "score"})')
_TOLERANCE = 1e-4  # teacher files print scores rounded; a repeat within this is the same score
_READER_VERSION = 1  # bump when what a prepared table holds changes: old entries are then not reused

# (line, qid, [(pid, raw score)], (pid_pos, pid_neg) or None)
Record = tuple[int, str, list[tuple[str, Any]], tuple[str, str] | None]


@dataclass
class TeacherScores:
    """Teacher scores for (qid, pid) pairs, plus explicit (pos, neg) pairs when the file lists them.

    `scores` and `pairs` are mappings: plain dicts when built by hand, views over the memory-mapped table
    when read from a file (a query's dict is built when asked for).
    """

    scores: Mapping[str, Mapping[str, float]]  # qid -> pid -> score
    pairs: Mapping[str, list[tuple[str, str]]]  # qid -> [(pid_pos, pid_neg)] in file order; empty for pointwise
    source: str

    def score(self, qid: str, pid: str) -> float | None:
        if isinstance(self.scores, TableScores):
            return self.scores.table.score(qid, pid)
        return self.scores.get(qid, {}).get(pid)

    def passages(self, qids: list[str]) -> list[str]:
        """Sorted distinct passages scored for any of `qids`."""
        if isinstance(self.scores, TableScores):
            return self.scores.table.passages_of(qids)
        return sorted({pid for qid in qids for pid in self.scores.get(qid, {})})

    def __len__(self) -> int:
        if isinstance(self.scores, TableScores):
            return self.scores.table.n_rows
        return sum(len(by_pid) for by_pid in self.scores.values())


def _inner_suffix(path: Path) -> str:
    """The suffix that names the format: `scores.jsonl.gz` -> `.jsonl`."""
    return path.with_suffix("").suffix if path.suffix == ".gz" else path.suffix


def _tab_records(path: Path, policy: ReadPolicy, fmt: str) -> Iterator[Record]:
    """`auto` takes the field count of the first well-formed line (5 -> tasb, 3 -> tsv) for the whole file."""
    want = _COLUMNS.get(fmt)
    for number, fields in read_tsv(path, policy, (want,) if want else (5, 3)):
        if want is None:
            want = len(fields)
        elif len(fields) != want:
            policy.bad(path, number, f"malformed line: expected {want} tab-separated fields, got {len(fields)}")
            continue
        fields = [f.strip() for f in fields]
        if want == 5:
            s_pos, s_neg, qid, pos, neg = fields
            yield number, qid, [(pos, s_pos), (neg, s_neg)], (pos, neg)
        else:
            qid, pid, s = fields
            yield number, qid, [(pid, s)], None


def _jsonl_records(path: Path, policy: ReadPolicy) -> Iterator[Record]:
    for number, obj in read_jsonl(path, policy):
        missing = [k for k in ("qid", "pid", "score") if k not in obj]
        if missing:
            policy.bad(path, number, f"missing key(s) {', '.join(map(repr, missing))}")
        elif not all(isinstance(obj[k], (str, int)) and not isinstance(obj[k], bool) for k in ("qid", "pid")):
            policy.bad(path, number, "malformed line: qid and pid must be strings or integers")
        else:
            yield number, str(obj["qid"]).strip(), [(str(obj["pid"]).strip(), obj["score"])], None


def _finite(raw: Any) -> float | None:
    try:
        value = float(raw) if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _check(record: Record, scores: dict[str, dict[str, float]]) -> tuple[dict[str, float] | None, str]:
    """The record's `{pid: score}`, or None and why it is bad."""
    _, qid, scored, _ = record
    seen = scores.get(qid, {})
    if not qid or not all(pid for pid, _ in scored):
        return None, "malformed line: empty query or passage id"
    out: dict[str, float] = {}
    for pid, raw in scored:
        score = _finite(raw)
        if score is None:
            return None, f"score {str(raw)!r} is not a finite number"
        old = out.get(pid, seen.get(pid))
        if old is not None and abs(old - score) > _TOLERANCE:
            return None, f"conflicting scores for passage {pid!r} of query {qid!r}: {old!r} and {score!r}"
        out[pid] = score
    return out, ""


def read_teacher_scores(path: str | Path, strict: bool = True, fmt: str = "auto",
                        cache_dir: str | Path | None = None) -> TeacherScores:
    """Teacher scores of a file, through its prepared table (built on first use, then mapped).

    `fmt`: "tasb" (5-column pair TSV), "tsv" (`qid pid score`), "jsonl" (`{"qid", "pid", "score"}`) or
    "auto" (.jsonl/.json suffix, else the first line's field count). Bad lines raise `DataFormatError`
    naming file:line (or are counted and skipped with `strict=False`, and counted again when the table is
    reused); a file with no scores is an error. Pickles are refused: unpickling can run arbitrary code.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown teacher score format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if _inner_suffix(path).lower() in _PICKLE_SUFFIXES:
        raise DataFormatError(path, None, f"refusing to read a pickled file: unpickling can run arbitrary code; {_ACCEPTED}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    policy = ReadPolicy(strict=strict)
    key = file_key(path, "teacher", fmt, f"strict={strict}", _READER_VERSION)

    def build(directory: Path) -> None:
        start = time.perf_counter()
        how = _prepare(path, fmt, policy, directory)
        table = TeacherTable.load(directory)
        write_json(directory / "meta.json", {"source": str(path), "format": fmt, "strict": strict, "read": how,
                                             "skipped": dict(policy.skipped), "rows": table.n_rows,
                                             "pairs": int(len(table.pair_pos)),
                                             "seconds": round(time.perf_counter() - start, 2)})

    directory, built = prepare_once(cache_root(cache_dir) / "teacher" / key, build, f"teacher scores {path}")
    meta = read_json(directory / "meta.json")
    if not built:
        policy.skipped.update(meta["skipped"])
    policy.report()
    table = TeacherTable.load(directory)
    logger.info("teacher scores %s: %d scores, %d pairs (%s at %s)", path, meta["rows"], meta["pairs"],
                "prepared" if built else "mapped", directory)
    return TeacherScores(scores=TableScores(table), pairs=TablePairs(table), source=str(path))


def _prepare(path: Path, fmt: str, policy: ReadPolicy, directory: Path) -> str:
    """Write the table into `directory`; returns how the file was read: the fast C++ parse for a clean
    TSV ("fast"), else line by line ("lines")."""
    is_jsonl = fmt == "jsonl" or (fmt == "auto" and _inner_suffix(path) in (".jsonl", ".json"))
    tab_fmt = None if is_jsonl else (fmt if fmt != "auto" else _sniff_columns(path))
    if tab_fmt is not None:
        why_not = read_fast(path, tab_fmt, _TOLERANCE, directory)
        if why_not is None:
            return "fast"
        logger.info("%s: reading line by line (%s)", path, why_not)
    scores, pairs = _read_exact(path, policy, fmt, is_jsonl)
    write_from_dicts(scores, pairs, directory)
    return "lines"


def _sniff_columns(path: Path) -> str | None:
    """`tasb` or `tsv` from the first non-blank line's field count (as the line reader decides), else None."""
    with _open_binary(path) as f:
        for raw in f:
            if raw.strip():
                return {5: "tasb", 3: "tsv"}.get(raw.count(b"\t") + 1)
    return None


def _read_exact(path: Path, policy: ReadPolicy, fmt: str, is_jsonl: bool) -> tuple[dict, dict]:
    """`(scores, pairs)` dicts, line by line: the reference semantics, and the only reader that names lines."""
    records = _jsonl_records(path, policy) if is_jsonl else _tab_records(path, policy, fmt)
    scores: dict[str, dict[str, float]] = {}
    pairs: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        checked, why = _check(record, scores)
        if checked is None:
            policy.bad(path, record[0], why)
            continue
        qid, pair = record[1], record[3]
        for pid, score in checked.items():
            scores.setdefault(qid, {}).setdefault(pid, score)
        if pair is not None:
            pairs.setdefault(qid, []).append(pair)
    if not scores:
        raise DataFormatError(path, None, "no teacher scores in the file")
    return scores, pairs


def write_teacher_scores(path: str | Path, scores: dict[str, dict[str, float]]) -> None:
    """TSV `qid<TAB>pid<TAB>score` (gzip when the name ends in .gz), written atomically.

    Scores are written with `repr`, so a write -> read round trip gives back the same floats.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with atomic_path(path) as tmp, opener(tmp, "wt", encoding="utf-8") as f:
        for qid, by_pid in scores.items():
            for pid, score in by_pid.items():
                if any(c in f"{qid}{pid}" for c in "\t\r\n") or not math.isfinite(score):
                    raise ValueError(f"cannot write query {qid!r} passage {pid!r} score {score!r} as TSV")
                f.write(f"{qid}\t{pid}\t{float(score)!r}\n")
