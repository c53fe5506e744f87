"""`qid -> [pid, ...]` as a memory-mapped table: negatives files and grouped training triples.

Layout (one `.npy` per column in a prepared directory, see `dr.data.prepared`):

    qids (Q,) S      sorted unique query ids (UTF-8 bytes)
    start (Q+1,)     items of query i are items[start[i]:start[i+1]], in file order
    items (N,) int32 positions in `pids`
    pids (P,) S      sorted unique passage ids
    line (Q,) int64  the line that lists the query (for errors that name it)

MS MARCO-size files (400k queries x hundreds of passages) cost a few hundred MB of page cache this way,
where a dict of lists of strings costs several GB in every process.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dr.data.prepared import ArrayTable, encode_ids, find_id, find_ids
from dr.data.teacher_table import ranges, sorted_codes

COLUMNS = ("qids", "start", "items", "pids", "line")
Arrays = dict[str, np.ndarray]


class IdLists(ArrayTable):
    """Read-only lookups over the prepared arrays."""

    COLUMNS = COLUMNS

    def __len__(self) -> int:
        return len(self.qids)

    def query_ids(self) -> list[str]:
        return decode(self.qids)

    def code(self, qid: str) -> int:
        return find_id(self.qids, qid)

    def get(self, qid: str) -> list[str] | None:
        code = self.code(qid)
        return None if code < 0 else decode(self.pids[self.items[self.start[code] : self.start[code + 1]]])

    def line_of(self, qid: str) -> int | None:
        code = self.code(qid)
        return None if code < 0 else int(self.line[code])

    def items_of(self, qids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`(item positions, index in qids of each)` of the listed queries, in `qids` order then file order."""
        codes, found = find_ids(self.qids, encode_ids(qids))
        which = np.flatnonzero(found)
        starts, ends = self.start[codes[which]], self.start[codes[which] + 1]
        return ranges(starts, ends), np.repeat(which, ends - starts)


def decode(raw: np.ndarray) -> list[str]:
    return [x.decode("utf-8") for x in raw.tolist()]


def arrays_from_lists(lists: Mapping[str, list[str]], lines: Mapping[str, int]) -> Arrays:
    """The table from an in-memory `{qid: [pid, ...]}` (the exact reader's result)."""
    qids = sorted(lists)
    pid_b = encode_ids(sorted({p for found in lists.values() for p in found}))
    flat = [p for q in qids for p in lists[q]]
    return {
        "qids": encode_ids(qids),
        "start": np.concatenate([[0], np.cumsum([len(lists[q]) for q in qids])]).astype(np.int64),
        "items": np.searchsorted(pid_b, encode_ids(flat)).astype(np.int32),
        "pids": pid_b,
        "line": np.array([lines[q] for q in qids], dtype=np.int64),
    }


def arrays_from_columns(qids: pa.ChunkedArray, lines: np.ndarray, pids: pa.ChunkedArray, parent: np.ndarray) -> Arrays:
    """The table from one entry per query (`qids`, unique, with `lines`) and its passages (`pids`, the
    entry of each in `parent`, grouped by entry in file order)."""
    qid_b, q = sorted_codes(qids.chunks)
    if len(pids):
        pid_b, items = sorted_codes(pids.chunks)
    else:
        pid_b, items = np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.int32)
    counts = np.bincount(parent, minlength=len(qid_b))  # entry -> number of passages
    order = np.argsort(q, kind="stable")  # entries in qid order
    item_start = np.concatenate([[0], np.cumsum(counts)])
    counts_sorted = counts[order]
    return {
        "qids": qid_b,
        "start": np.concatenate([[0], np.cumsum(counts_sorted)]).astype(np.int64),
        "items": items[ranges(item_start[order], item_start[order] + counts_sorted)].astype(np.int32),
        "pids": pid_b,
        "line": lines[order].astype(np.int64),
    }


def read_tsv_fast(path: Path) -> Arrays | str:
    """The table of a clean `qid<TAB>pid pid ...` file parsed by pyarrow, or why the line reader must do it
    (a malformed line, an empty or repeated query id, undecodable bytes, blank lines that shift numbers)."""
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=["qid", "pids"], block_size=64 << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False, escape_char=False,
                                             newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(column_types={"qid": pa.string(), "pids": pa.string()},
                                                 null_values=[], strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        return f"not a clean TSV ({str(e).splitlines()[0][:200]})"
    if table.num_rows != count_lines(path):
        return "blank lines (row numbers would not be line numbers)"
    qids = pc.utf8_trim_whitespace(table.column("qid"))
    if table.num_rows == 0 or pc.any(pc.equal(pc.binary_length(qids), 0)).as_py():
        return "an empty query id"
    if pc.count_distinct(qids).as_py() != table.num_rows:
        return "a repeated query id"
    split = pc.utf8_split_whitespace(table.column("pids"))
    pids = pa.chunked_array([c.flatten() for c in split.chunks], type=pa.string())
    parent = np.concatenate([c.value_parent_indices().to_numpy() + off for c, off in
                             zip(split.chunks, np.cumsum([0] + [len(c) for c in split.chunks[:-1]]))])
    keep = pc.not_equal(pids, "").to_numpy(zero_copy_only=False) if len(pids) else np.zeros(0, bool)
    if not keep.all():  # str.split() drops what leading, trailing or a lone whitespace would leave
        pids, parent = pids.filter(pa.array(keep)), parent[keep]
    lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return arrays_from_columns(qids, lines, pids, parent)


def count_lines(path: Path) -> int:
    """Lines in the file (the last one need not end in a newline), counted in 16 MB blocks."""
    from dr.data.lines import _open_binary

    n, last = 0, b"\n"
    with _open_binary(path) as f:
        while block := f.read(16 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


