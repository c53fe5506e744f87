"""Hugging Face `datasets` readers on small local datasets: Tevatron schema and BEIR layout; offline errors."""
from __future__ import annotations

import json
import logging

import pytest

from conftest import PASSAGES, QRELS, QUERIES
from dr.data.errors import DataFormatError
from dr.data.hf import DatasetUnavailableError, TevatronNegatives, hf_beir_set, hf_tevatron_set
from dr.data.sources import beir_set


def _tevatron_rows() -> list[dict]:
    """One row per fixture query: its grade >= 2 passages positive, two passages of other topics negative."""
    def passage(d):
        return {"docid": d, "title": PASSAGES[d][0], "text": PASSAGES[d][1]}

    rows = []
    for i, (qid, judged) in enumerate(QRELS.items()):
        others = [d for d in PASSAGES if d not in judged]
        rows.append({"query_id": qid, "query": QUERIES[qid],
                     "positive_passages": [passage(d) for d, g in judged.items() if g >= 2],
                     "negative_passages": [passage(d) for d in others[i : i + 2]]})
    return rows


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("kind", ["jsonl", "save_to_disk"])
def test_tevatron_rows_give_a_retrieval_set_and_negatives(tmp_path, kind):
    rows = _tevatron_rows()
    if kind == "jsonl":
        spec = {"dataset": "json", "data_files": _jsonl(tmp_path / "train.jsonl", rows)}
    else:
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "tev"))
        spec = {"dataset": str(tmp_path / "tev")}
    train = hf_tevatron_set("tev-train", split="train", **spec)
    assert train.queries == QUERIES
    assert train.qrels == {q: {d: 1 for d, g in j.items() if g >= 2} for q, j in QRELS.items()}
    listed = {p["docid"] for r in rows for p in r["positive_passages"] + r["negative_passages"]}
    assert len(train.corpus) == len(listed) and all(d in train.corpus for d in listed)
    assert train.corpus.text("d1") == "Goldfish " + PASSAGES["d1"][1]
    negs = TevatronNegatives(split="train", **spec).negatives(train, ["q1", "q2"])
    assert negs == {r["query_id"]: [p["docid"] for p in r["negative_passages"]] for r in rows[:2]}


def test_tevatron_with_a_corpus_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"docid": d, "title": t, "text": x} for d, (t, x) in PASSAGES.items()]) \
        .save_to_disk(str(tmp_path / "corpus-ds"))
    train = hf_tevatron_set("t", "json", data_files=_jsonl(tmp_path / "train.jsonl", _tevatron_rows()),
                            corpus_dataset=str(tmp_path / "corpus-ds"))
    assert len(train.corpus) == len(PASSAGES) and train.corpus.text("d12").startswith("Sunlight")


def test_tevatron_bad_rows_name_the_row(tmp_path, caplog):
    rows = _tevatron_rows()
    rows.append(dict(rows[0]))  # row 5 repeats q1
    path = _jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"hf:json\[train\]:5: duplicate id 'q1'"):
        hf_tevatron_set("t", "json", data_files=path)
    with caplog.at_level(logging.WARNING, logger="dr"):
        train = hf_tevatron_set("t", "json", data_files=path, strict=False)
    assert "lenient read skipped 1 record(s)" in caplog.text and len(train.queries) == 4
    rows = _tevatron_rows()
    rows[1]["negative_passages"].append(rows[1]["positive_passages"][0])
    path = _jsonl(tmp_path / "neg.jsonl", rows)
    train = hf_tevatron_set("t", "json", data_files=path)
    with pytest.raises(DataFormatError, match=r"hf:json\[train\]:2: passage 'd4' is a positive of query 'q2'"):
        TevatronNegatives("json", data_files=path).negatives(train, sorted(train.queries))
    lenient = TevatronNegatives("json", data_files=path, strict=False).negatives(train, sorted(train.queries))
    assert "d4" not in lenient["q2"] and len(lenient["q2"]) == 2


def _save_beir(root) -> None:
    import datasets

    corpus = [{"_id": d, "title": t, "text": x} for d, (t, x) in PASSAGES.items()]
    queries = [{"_id": q, "text": t} for q, t in QUERIES.items()]
    qrels = [{"query-id": q, "corpus-id": d, "score": g} for q, j in QRELS.items() for d, g in j.items()]
    datasets.DatasetDict({"corpus": datasets.Dataset.from_list(corpus)}).save_to_disk(str(root / "corpus"))
    datasets.DatasetDict({"queries": datasets.Dataset.from_list(queries)}).save_to_disk(str(root / "queries"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(qrels)}).save_to_disk(str(root) + "-qrels")


def test_beir_layout_reads_like_the_beir_folder(tmp_path, tiny_data_dir):
    _save_beir(tmp_path / "scifact-hub")
    hub = hf_beir_set("scifact-test", str(tmp_path / "scifact-hub"), split="test")
    folder = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    assert hub.queries == folder.queries and hub.qrels == folder.qrels
    ids = [str(x) for x in folder.corpus.ids[folder.corpus.active_rows]]
    assert hub.corpus.texts(hub.corpus.rows_of(ids)) == folder.corpus.texts(folder.corpus.rows_of(ids))
    assert hub.corpus.fingerprint == folder.corpus.fingerprint  # same content: same embedding cache


def test_a_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(DatasetUnavailableError) as e:
        hf_tevatron_set("t", "someone/absent-tevatron-data")
    assert "'someone/absent-tevatron-data'" in str(e.value) and "offline (HF_HUB_OFFLINE=1)" in str(e.value)
    with pytest.raises(DatasetUnavailableError, match="'BeIR/absent'"):
        hf_beir_set("x", "BeIR/absent")
