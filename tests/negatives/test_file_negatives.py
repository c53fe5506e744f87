"""negatives=file: a file whose query ids match no training query is an error, a partial match a warning."""
from __future__ import annotations

import logging

import pytest

from dr.data.errors import DataFormatError
from dr.data.sources import beir_set
from dr.negatives.file import FileNegatives


@pytest.fixture
def train(train_data_dir):
    return beir_set("scifact-train", str(train_data_dir / "scifact"), "train")


def test_file_matching_no_training_query_is_an_error(train, tmp_path):
    # ids written without the "t" prefix the training set uses: a typical wrong-file / wrong-format mistake
    path = tmp_path / "negs.tsv"
    path.write_text("".join(f"d{i}-0\td2 d3\n" for i in range(1, 13)))
    qids = sorted(train.queries)
    with pytest.raises(DataFormatError) as e:
        FileNegatives(str(path)).negatives(train, qids)
    message = str(e.value)
    assert message.startswith(f"{path}: none of its 12 query ids")
    assert "'d1-0'" in message and "'d2-0'" in message  # a few of the unmatched ids
    assert "'d12-0'" not in message  # a few, not all
    assert "'td1-0'" in message  # and what training ids look like
    # lenient reading skips bad records; it does not make a useless file usable
    with pytest.raises(DataFormatError, match="none of its 12 query ids"):
        FileNegatives(str(path), strict=False).negatives(train, qids)


def test_empty_file_is_an_error(train, tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("\n")
    with pytest.raises(DataFormatError, match=f"{path}: no negatives"):
        FileNegatives(str(path)).negatives(train, sorted(train.queries))


def test_partial_match_warns_with_counts(train, tmp_path, caplog):
    path = tmp_path / "negs.tsv"
    path.write_text("td1-0\td2 d3\ntd1-1\td4\nnot-a-query\td5\nalso-not\td6\n")
    qids = ["td1-0", "td1-1", "td2-0"]
    with caplog.at_level(logging.WARNING, logger="dr"):
        negs = FileNegatives(str(path)).negatives(train, qids)
    assert negs == {"td1-0": ["d2", "d3"], "td1-1": ["d4"], "td2-0": []}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and "2 of 4 query ids" in m and "'not-a-query'" in m
               and "1 of 3 training queries" in m for m in warned), warned


def test_dev_queries_in_the_file_are_not_unmatched(train, tmp_path, caplog):
    """dr.mine writes every training query; those held out for dev are training-set queries, not strays."""
    path = tmp_path / "negs.tsv"
    path.write_text("td1-0\td2\ntd1-1\td3\n")
    with caplog.at_level(logging.WARNING, logger="dr"):
        assert FileNegatives(str(path)).negatives(train, ["td1-0"]) == {"td1-0": ["d2"]}
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
