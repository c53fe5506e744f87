"""Line-by-line reading that reports the file and line of undecodable or malformed input."""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dr.data.errors import ReadPolicy


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for each non-blank line, decoded as UTF-8 (1-based numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                policy.bad(path, number, f"not UTF-8: byte {raw[e.start]:#04x} at column {e.start + 1}")
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first id
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, text


def read_tsv(path: str | Path, policy: ReadPolicy, columns: tuple[int, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line_number, fields)` for rows whose field count is one of `columns`."""
    for number, text in read_lines(path, policy):
        fields = text.split("\t")
        if len(fields) not in columns:
            want = " or ".join(str(c) for c in columns)
            policy.bad(path, number, f"malformed line: expected {want} tab-separated fields, got {len(fields)}")
            continue
        yield number, fields


def read_jsonl(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for each JSON-object line."""
    for number, text in read_lines(path, policy):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            policy.bad(path, number, f"malformed line: invalid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            policy.bad(path, number, "malformed line: expected a JSON object")
            continue
        yield number, obj
