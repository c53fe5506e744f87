from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dr.data.errors import DataFormatError
from dr.data.sources import beir_set
from dr.negatives.file import FileNegatives

REPO = Path(__file__).resolve().parents[2]


def test_mine_writes_negatives_without_positives(tiny_model, train_data_dir, tmp_path):
    out = tmp_path / "neg.tsv"
    env = {**os.environ, "DR_DATA_DIR": str(train_data_dir), "DR_CACHE": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "dr.mine", f"model.name_or_path={tiny_model}", "model.pooling=mean",
                           "model.show_progress=false", f"out={out}", "per_query=4", "window=[0,8]",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = beir_set("t", str(train_data_dir / "scifact"), "train")
    negs = FileNegatives(str(out)).negatives(train, sorted(train.queries))
    assert len(negs) == 36
    for qid, pids in negs.items():
        assert len(pids) == 4
        assert not set(pids) & {d for d, g in train.qrels[qid].items() if g > 0}


def test_mine_with_two_processes_writes_what_one_process_writes(tiny_model, train_data_dir, tmp_path):
    """Each process searches its shard; rank 0 writes the file after leaving the process group."""
    outs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2"])):
        outs[name] = tmp_path / f"{name}.tsv"
        env = {**os.environ, "DR_DATA_DIR": str(train_data_dir), "DR_CACHE": str(tmp_path / f"c-{name}"),
               "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, *launcher, "-m", "dr.mine", f"model.name_or_path={tiny_model}",
                               "model.pooling=mean", "model.show_progress=false", f"out={outs[name]}", "per_query=4",
                               "window=[0,8]", f"hydra.run.dir={tmp_path / name}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert outs["one"].read_text() == outs["two"].read_text()


def test_negatives_file_bad_input(train_data_dir, tmp_path):
    train = beir_set("t", str(train_data_dir / "scifact"), "train")
    bad = tmp_path / "bad.tsv"
    bad.write_text("td1-0\td2 d3\ntd1-1\tnot-a-doc\n")
    with pytest.raises(DataFormatError, match=rf"{bad}:2: passage id 'not-a-doc' is not in"):
        FileNegatives(str(bad)).negatives(train, ["td1-0", "td1-1"])
    pos = tmp_path / "pos.tsv"
    pos.write_text("td1-0\td1 d2\n")
    with pytest.raises(DataFormatError, match=rf"{pos}:1: passage 'd1' is a positive"):
        FileNegatives(str(pos)).negatives(train, ["td1-0"])
    assert FileNegatives(str(pos), strict=False).negatives(train, ["td1-0"]) == {"td1-0": ["d2"]}
    js = tmp_path / "n.jsonl"
    js.write_text('{"qid": "td1-0", "negatives": ["d2", "d3"]}\n{"qid": "td1-1"}\n')
    with pytest.raises(DataFormatError, match=rf"{js}:2: malformed line"):
        FileNegatives(str(js)).negatives(train, ["td1-0"])
