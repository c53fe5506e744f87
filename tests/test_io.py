"""dr.io: atomic writes replace the destination whole, or leave it as it was."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dr.io import atomic_open, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, temporary_name


def test_temporary_name_is_hidden_pid_unique_and_keeps_the_suffix(tmp_path):
    tmp = temporary_name(tmp_path / "emb.npy")
    assert tmp.parent == tmp_path and tmp.name == f".emb.{os.getpid()}.tmp.npy"
    assert temporary_name(tmp_path / "scores.tsv.gz").name == f".scores.tsv.{os.getpid()}.tmp.gz"


def test_writes_replace_and_create_directories(tmp_path):
    path = tmp_path / "a" / "b" / "metrics.json"
    atomic_write_json(path, {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_np_save_writes_where_it_is_told(tmp_path):
    path = tmp_path / "ids.npy"
    with atomic_path(path) as tmp:
        np.save(tmp, np.arange(3), allow_pickle=False)  # np.save appends .npy unless the name ends in it
    assert np.load(path).tolist() == [0, 1, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["ids.npy"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="half way"):
        with atomic_open(path) as f:
            f.write("new, partly\n")
            raise ValueError("half way")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "never.json"):
            raise RuntimeError
    assert not (tmp_path / "never.json").exists()


def test_a_reader_never_sees_a_partial_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 0})
    with atomic_open(path) as f:
        f.write('{"v": 1')  # incomplete JSON while the block is open
        assert json.loads(path.read_text()) == {"v": 0}  # the destination is still the old, whole file
        f.write("}")
    assert json.loads(path.read_text()) == {"v": 1}


def test_binary_mode(tmp_path):
    with atomic_open(tmp_path / "x.bin", "wb") as f:
        f.write(b"abc")
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
