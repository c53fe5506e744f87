"""Teacher scores as a memory-mapped table: no Python dict with tens of millions of entries.

Layout (one `.npy` per column, in a cache directory keyed by the source file; see `dr.data.teacher`):

    qids (Q,) S   pids (P,) S            sorted unique ids (UTF-8 bytes); a query or passage is its position
    q_start (Q+1,) int64                 rows of query i are q_start[i]:q_start[i+1]
    row_pid (R,) int32  row_score (R,) float64    one row per scored (qid, pid), sorted by (qid, pid)
    pair_start (Q+1,) int64              pairs of query i are pair_start[i]:pair_start[i+1], in file order
    pair_pos (N,) pair_neg (N,) int      the pair's two rows (so a pair's scores are the rows' scores)

A lookup is two binary searches (the query among `qids`, the passage among the query's rows). Pages are
read when touched and shared through the page cache by every process on the machine.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dr.data.prepared import ArrayTable, NpyAppender, encode_ids, find_id, find_ids, save_arrays

COLUMNS = ("qids", "pids", "q_start", "row_pid", "row_score", "pair_start", "pair_pos", "pair_neg")
_CHUNK_LINES = 1_000_000  # lines sorted at once: bounds the temporaries (about 200 bytes a line)
Arrays = dict[str, np.ndarray]


class TeacherTable(ArrayTable):
    """Read-only lookups over the prepared arrays."""

    COLUMNS = COLUMNS

    @property
    def n_rows(self) -> int:
        return len(self.row_pid)

    def _rows(self, qid: str) -> tuple[int, int]:
        code = find_id(self.qids, qid)
        return (0, 0) if code < 0 else (int(self.q_start[code]), int(self.q_start[code + 1]))

    def score(self, qid: str, pid: str) -> float | None:
        a, b = self._rows(qid)
        code = find_id(self.pids, pid)
        if a == b or code < 0:
            return None
        at = a + int(np.searchsorted(self.row_pid[a:b], code))
        return float(self.row_score[at]) if at < b and self.row_pid[at] == code else None

    def scores_of(self, qid: str) -> dict[str, float] | None:
        a, b = self._rows(qid)
        if a == b:
            return None
        pids = _decode(self.pids[self.row_pid[a:b]])
        return dict(zip(pids, self.row_score[a:b].tolist()))

    def pairs_of(self, qid: str) -> list[tuple[str, str]] | None:
        code = find_id(self.qids, qid)
        if code < 0 or self.pair_start[code] == self.pair_start[code + 1]:
            return None
        a, b = int(self.pair_start[code]), int(self.pair_start[code + 1])
        pos = _decode(self.pids[self.row_pid[self.pair_pos[a:b]]])
        neg = _decode(self.pids[self.row_pid[self.pair_neg[a:b]]])
        return list(zip(pos, neg))


    def passages_of(self, qids: list[str]) -> list[str]:
        """Sorted distinct passages scored for any of `qids`."""
        codes, found = find_ids(self.qids, encode_ids(qids))
        codes = codes[found]
        used = np.zeros(len(self.pids), dtype=bool)  # a mask, not a sort of tens of millions of rows
        used[self.row_pid[ranges(self.q_start[codes], self.q_start[codes + 1])]] = True
        return _decode(self.pids[np.flatnonzero(used)])


def ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenated `arange(a, b)` for each (a, b), without a Python loop."""
    lengths = (ends - starts).astype(np.int64)
    shift = np.repeat(starts.astype(np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + shift


def _decode(raw: np.ndarray) -> list[str]:
    return [x.decode("utf-8") for x in raw.tolist()]


class TableScores(Mapping):
    """`qid -> {pid: score}` over a `TeacherTable`; each query's dict is built when it is asked for."""

    def __init__(self, table: TeacherTable) -> None:
        self.table = table

    def __getitem__(self, qid: str) -> dict[str, float]:
        found = self.table.scores_of(qid) if isinstance(qid, str) else None
        if found is None:
            raise KeyError(qid)
        return found

    def __iter__(self) -> Iterator[str]:
        nonempty = np.flatnonzero(np.diff(self.table.q_start) > 0)
        return iter(_decode(self.table.qids[nonempty]))

    def __len__(self) -> int:
        return int(np.count_nonzero(np.diff(self.table.q_start)))

    def __contains__(self, qid: object) -> bool:
        return isinstance(qid, str) and self.table._rows(qid)[0] != self.table._rows(qid)[1]


class TablePairs(Mapping):
    """`qid -> [(pid_pos, pid_neg)]` in file order, for the queries that have pairs."""

    def __init__(self, table: TeacherTable) -> None:
        self.table = table

    def __getitem__(self, qid: str) -> list[tuple[str, str]]:
        found = self.table.pairs_of(qid) if isinstance(qid, str) else None
        if found is None:
            raise KeyError(qid)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(_decode(self.table.qids[np.flatnonzero(np.diff(self.table.pair_start) > 0)]))

    def __len__(self) -> int:
        return int(np.count_nonzero(np.diff(self.table.pair_start)))

    def __contains__(self, qid: object) -> bool:
        code = find_id(self.table.qids, qid) if isinstance(qid, str) else -1
        return code >= 0 and self.table.pair_start[code + 1] > self.table.pair_start[code]


# ---- building the arrays -------------------------------------------------------------------------------


class Conflict(Exception):
    """Two scores of one (qid, pid) differ: the exact reader is run to name the line."""


def build_arrays(qids: np.ndarray, pids: np.ndarray, q: np.ndarray, p: list[np.ndarray], s: np.ndarray,
                 with_pairs: bool, tolerance: float, directory: Path) -> None:
    """The table's files in `directory`, from interned lines. `qids`/`pids` sorted unique bytes; per line
    `q` (L,), passages `p` (K columns of (L,)) and scores `s` (L, K): K = 2 for (positive, negative) pair
    lines, 1 for `qid pid score` lines.

    The first score of a (qid, pid) is kept (file order, positive before negative); a later one further
    than `tolerance` away raises `Conflict`. Lines are grouped by query once (a stable sort), then sorted
    by passage a chunk of whole queries at a time; each chunk's rows and pairs are appended to their files
    at once, so memory holds the input columns and one chunk (about 3 GB at 40M lines in all).
    """
    n_q, n_p, k = len(qids), len(pids), len(p)
    order = np.argsort(q, kind="stable")  # (L,) lines grouped by query, file order within a query
    if len(order) < 2**31:
        order = order.astype(np.int32)  # half the memory for the rest of the build
    line_start = np.searchsorted(q[order], np.arange(n_q + 1))
    index_type = np.int32 if q.size * k < 2**31 else np.int64  # row numbers are below L * K
    q_rows = np.zeros(n_q, dtype=np.int64)
    columns = {"row_pid": np.int32, "row_score": np.float64, "pair_pos": index_type, "pair_neg": index_type}
    out = {name: NpyAppender(directory / f"{name}.npy", dtype) for name, dtype in columns.items()}
    n_rows = 0
    try:
        for a, b in _chunks(line_start, _CHUNK_LINES):
            lines = order[a:b]
            first_q = int(q[lines[0]])
            passages = np.stack([column[lines] for column in p], axis=1).ravel()  # (M,) M = (b-a)*K, line-major
            key = np.repeat(q[lines] - first_q, k).astype(np.int64) * n_p + passages
            o = np.argsort(key, kind="stable")
            key = key[o]
            score_sorted = s[lines].ravel()[o]
            head = np.ones(len(o), dtype=bool)
            head[1:] = key[1:] != key[:-1]
            first_of_run = np.maximum.accumulate(np.where(head, np.arange(len(o)), 0))
            if np.any(np.abs(score_sorted - score_sorted[first_of_run]) > tolerance):
                raise Conflict
            del first_of_run
            unique_keys = key[head]
            per_query = np.bincount(unique_keys // n_p)
            q_rows[first_q : first_q + len(per_query)] += per_query
            out["row_pid"].append(unique_keys % n_p)
            out["row_score"].append(score_sorted[head])
            if with_pairs:
                entry_row = np.empty(len(o), dtype=index_type)
                entry_row[o] = np.cumsum(head, dtype=index_type) - 1 + n_rows
                out["pair_pos"].append(entry_row[0::k])
                out["pair_neg"].append(entry_row[k - 1 :: k])
            n_rows += len(unique_keys)
    finally:
        for appender in out.values():
            appender.close()
    save_arrays(directory, {
        "qids": qids, "pids": pids,
        "q_start": np.concatenate([[0], np.cumsum(q_rows)]).astype(np.int64),
        "pair_start": (line_start if with_pairs else np.zeros(n_q + 1)).astype(np.int64),
    })


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    """Concatenate and free the parts as they are copied (peak: the result plus one part)."""
    out = np.empty((sum(len(x) for x in parts), *(parts[0].shape[1:] if parts else ())), dtype=dtype)
    at = 0
    while parts:
        part = parts.pop(0)
        out[at : at + len(part)] = part
        at += len(part)
    return out


def _chunks(starts: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """[a, b) ranges of about `size` items that never split a query's range."""
    a, total = 0, int(starts[-1])
    while a < total:
        # the first query boundary at or past a + size (a query larger than `size` is taken whole)
        b = int(starts[min(np.searchsorted(starts, a + size, side="left"), len(starts) - 1)])
        yield a, b
        a = b


def write_from_dicts(scores: dict[str, dict[str, float]], pairs: dict[str, list[tuple[str, str]]],
                     directory: Path) -> None:
    """The table's files from the exact reader's dicts (checked already; every pair's passages are scored)."""
    qid_b = encode_ids(sorted(scores))
    pid_b = encode_ids(sorted({pid for by_pid in scores.values() for pid in by_pid}))
    flat = [(qid, pid, v) for qid, by_pid in scores.items() for pid, v in by_pid.items()]
    q = np.searchsorted(qid_b, encode_ids([x[0] for x in flat])).astype(np.int32)
    p = np.searchsorted(pid_b, encode_ids([x[1] for x in flat])).astype(np.int32)
    s = np.array([x[2] for x in flat], dtype=np.float64)
    build_arrays(qid_b, pid_b, q, [p], s[:, None], False, np.inf, directory)
    if pairs:
        table = TeacherTable.load(directory)
        listed = [(qid, pos, neg) for qid, found in pairs.items() for pos, neg in found]
        pq = np.searchsorted(qid_b, encode_ids([x[0] for x in listed])).astype(np.int64)
        order = np.argsort(pq, kind="stable")  # grouped by query, file order within
        row_key = np.repeat(np.arange(len(qid_b)), np.diff(table.q_start)) * len(pid_b) + table.row_pid
        columns = {"pair_start": np.searchsorted(pq[order], np.arange(len(qid_b) + 1)).astype(np.int64)}
        for name, col in (("pair_pos", 1), ("pair_neg", 2)):
            pid_codes = np.searchsorted(pid_b, encode_ids([x[col] for x in listed]))
            columns[name] = np.searchsorted(row_key, pq * len(pid_b) + pid_codes)[order].astype(table.pair_pos.dtype)
        del table
        save_arrays(directory, columns)


# ---- the fast reader (clean TSV files) -----------------------------------------------------------------

_SPEC = {"tasb": (["s_pos", "s_neg", "qid", "pos", "neg"], ["s_pos", "s_neg"]),
         "tsv": (["qid", "pid", "score"], ["score"])}
Parsed = tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]  # qids, q, pids, p, s


def read_fast(path: Path, fmt: str, tolerance: float, directory: Path) -> str | None:
    """Write the table of a clean `tasb` / `tsv` file parsed in C++ (pyarrow.csv) into `directory`; or
    return why not (then `directory` may hold partial files: the caller writes them again).

    Anything the exact line reader would treat differently (a malformed line, an empty id, a score that
    is not a finite number, a conflicting repeat, undecodable bytes) returns a reason instead, and the
    caller reads the file line by line, which names the line (strict) or skips it (lenient).
    """
    try:
        parsed = _parse_integer_ids(path, fmt)
        if parsed is None:
            parsed = _parse_string_ids(path, fmt)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        return f"not a clean {fmt} file ({str(e).splitlines()[0][:200]})"
    if isinstance(parsed, str):
        return parsed
    qids, q, pids, p, s = parsed
    if len(p) == 2 and np.any(p[0] == p[1]):
        return "a line whose positive is its negative"
    try:
        build_arrays(qids, pids, q, p, s, fmt == "tasb", tolerance, directory)
    except Conflict:
        return "conflicting scores"
    return None


def _csv(path: Path, fmt: str, stream: bool):
    names, score_cols = _SPEC[fmt]
    read = pacsv.open_csv if stream else pacsv.read_csv
    return read(path, read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                                                 escape_char=False, newlines_in_values=False, ignore_empty_lines=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: (pa.float64() if c in score_cols else pa.string()) for c in names},
                    null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False))


def _scores(batch, fmt: str) -> np.ndarray | None:
    """(rows, K) finite float64 scores, or None."""
    s = np.stack([batch.column(c).to_numpy() for c in _SPEC[fmt][1]], axis=1)
    return s if np.isfinite(s).all() else None


def _parse_integer_ids(path: Path, fmt: str) -> Parsed | str | None:
    """Streamed, keeping only numbers: for files whose ids are all canonical integers (MS MARCO's), which
    then cost 4 bytes each instead of an Arrow string. None when an id is not such an integer."""
    names, score_cols = _SPEC[fmt]
    id_cols = [c for c in names if c not in score_cols]
    ids: dict[str, list[np.ndarray]] = {c: [] for c in id_cols}
    scores: list[np.ndarray] = []
    for batch in _csv(path, fmt, stream=True):
        s = _scores(batch, fmt)
        if s is None:
            return "a score that is not a finite number"
        scores.append(s)
        for c in id_cols:
            numbers = _canonical_integers(batch.column(c))
            if numbers is None:
                return None
            small = numbers.size == 0 or (numbers.min() >= -(2**31) and numbers.max() < 2**31)
            ids[c].append(numbers.astype(np.int32) if small else numbers)
    if not scores:
        return "no lines"
    s = _concat(scores, np.float64)
    columns = {c: _concat(parts, np.result_type(*parts)) for c, parts in ids.items()}
    del ids
    qids, (q,) = _intern_integers([columns.pop("qid")])
    pids, codes = _intern_integers([columns.pop(c) for c in id_cols[1:]])
    pa.default_memory_pool().release_unused()  # the parser's blocks: give them back before the build
    return qids, q, pids, codes, s


def _parse_string_ids(path: Path, fmt: str) -> Parsed | str:
    names, score_cols = _SPEC[fmt]
    table = _csv(path, fmt, stream=False)
    if table.num_rows == 0:
        return "no lines"
    s = _scores(table, fmt)
    if s is None:
        return "a score that is not a finite number"
    id_cols = [c for c in names if c not in score_cols]
    ids = {c: pc.utf8_trim_whitespace(table.column(c)) for c in id_cols}
    del table
    if any(pc.any(pc.equal(pc.binary_length(col), 0)).as_py() for col in ids.values()):
        return "an empty id"
    qids, q = sorted_codes(ids.pop("qid").chunks)
    passage_chunks = [chunk for c in id_cols[1:] for chunk in ids.pop(c).chunks]
    pids, codes = sorted_codes(passage_chunks)
    return qids, q, pids, np.split(codes, len(id_cols) - 1), s


def sorted_codes(chunks: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """`(sorted unique ids as bytes, int32 code of each value)` over the chunks, in order.

    Ids written as plain integers (MS MARCO's) are interned as numbers; other ids go through Arrow's
    dictionary encoding (a hash pass). Either way only the distinct ids are then sorted as strings.
    """
    column = pa.chunked_array(chunks, type=pa.string())
    numbers = _canonical_integers(column)
    if numbers is not None:
        text, (codes,) = _intern_integers([numbers])
        return text, codes
    encoded = pc.dictionary_encode(column)
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    text, (codes,) = _sort_as_text(fixed_bytes(encoded.chunks[-1].dictionary), [codes])
    return text, codes


def _sort_as_text(text: np.ndarray, codes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sort distinct ids `text` (bytes) and renumber `codes` (positions in `text`) to match."""
    order = np.argsort(text, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return text[order], [rank[c] for c in codes]


def _canonical_integers(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The ids as int64 when every one is an integer written canonically ("7", not "07" or "+7"), else None."""
    try:
        numbers = np.asarray(pc.cast(column, pa.int64()).to_numpy())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    digits = np.maximum(np.searchsorted(_POWERS_OF_TEN, np.abs(numbers), side="right"), 1) + (numbers < 0)
    return numbers if np.array_equal(digits, np.asarray(pc.utf8_length(column).to_numpy())) else None


_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


def _intern_integers(columns: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """`(distinct ids as sorted bytes, int32 code of each value of each column)` for integer ids.

    Takes the columns out of `columns` as it codes them, so that each is freed as soon as it is coded.
    """
    low = min(int(c.min()) for c in columns)
    high = max(int(c.max()) for c in columns)
    if low >= 0 and high < max(4 * sum(c.size for c in columns), 1 << 24):
        # dense non-negative ids (MS MARCO's): a lookup table over 0..high, no sort of all values
        present = np.zeros(high + 1, dtype=bool)
        for c in columns:
            present[c] = True
        unique = np.flatnonzero(present)
        del present
        text, (rank,) = _sort_as_text(_as_text(unique), [np.arange(len(unique), dtype=np.int32)])
        lookup = np.zeros(high + 1, dtype=np.int32)
        lookup[unique] = rank
        del unique, rank
        codes = []
        while columns:
            codes.append(lookup[columns.pop(0)])
        return text, codes
    sizes = np.cumsum([c.size for c in columns])[:-1]
    unique, inverse = np.unique(np.concatenate(columns), return_inverse=True)
    columns.clear()
    text, (codes,) = _sort_as_text(_as_text(unique), [inverse.astype(np.int32)])
    return text, np.split(codes, sizes)


def _as_text(numbers: np.ndarray) -> np.ndarray:
    return fixed_bytes(pc.cast(pa.array(numbers), pa.string()))


def fixed_bytes(array: pa.Array) -> np.ndarray:
    """An Arrow string array as a numpy `S<width>` array, built from its buffers without a Python loop."""
    array = pa.concat_arrays([array]) if array.offset else array
    n = len(array)
    lengths = pc.binary_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    if n and pc.all(pc.string_is_ascii(array)).as_py():  # one byte a character: pad with NULs to the width
        padded = pc.utf8_rpad(array, width=width, padding="\x00")
        data = np.frombuffer(padded.buffers()[2], dtype=np.uint8, count=n * width, offset=0)
        return data.view(f"S{width}").copy()
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[: n + 1].astype(np.int64)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.zeros(0, np.uint8)
    out = np.zeros(n * width, dtype=np.uint8)
    flat = np.arange(offsets[-1] - offsets[0]) + np.repeat(np.arange(n) * width - (offsets[:-1] - offsets[0]), lengths)
    out[flat] = data[offsets[0] : offsets[-1]]
    return out.view(f"S{width}")
