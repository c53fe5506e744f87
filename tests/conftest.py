"""Shared offline fixtures: a tiny random BERT with a WordPiece vocab trained on fixture text, and a
tiny data folder with the same layout as data/ (SciFact BEIR folder, DL19 pool, DL19 qrels/topics)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Twelve passages on four topics; queries share words with their relevant passages.
PASSAGES = {
    "d1": ("Goldfish", "Goldfish grow larger in big ponds with clean water and plenty of food."),
    "d2": ("Aquarium care", "A small aquarium limits how large fish grow; change the water weekly."),
    "d3": ("Koi ponds", "Koi and goldfish share ponds; both are carp and can live for decades."),
    "d4": ("Wifi", "Wifi is a wireless network technology for local area networking of devices."),
    "d5": ("Bluetooth", "Bluetooth connects devices over short distances using low power radio."),
    "d6": ("Routers", "A router forwards packets between networks and often provides wifi access."),
    "d7": ("World War One", "The United States entered World War One in 1917 after submarine attacks."),
    "d8": ("Zimmermann telegram", "The Zimmermann telegram proposed a German alliance with Mexico in 1917."),
    "d9": ("Lusitania", "The sinking of the Lusitania by a submarine killed many American passengers."),
    "d10": ("Vitamin D", "Vitamin D deficiency is linked to weak bones and low calcium absorption."),
    "d11": ("Calcium", "Calcium and vitamin D supplements support bone density in older adults."),
    "d12": ("Sunlight", "Sunlight exposure lets the skin produce vitamin D naturally."),
}
QUERIES = {
    "q1": "do goldfish grow in ponds",
    "q2": "what is wifi vs bluetooth",
    "q3": "why did the us enter world war one",
    "q4": "vitamin d and bone health",
}
QRELS = {
    "q1": {"d1": 2, "d3": 1, "d2": 0},
    "q2": {"d4": 3, "d5": 2, "d6": 1},
    "q3": {"d7": 3, "d9": 2, "d8": 1},
    "q4": {"d10": 2, "d11": 3, "d12": 1},
}


def corpus_text() -> list[str]:
    return [f"{t} {x}" for t, x in PASSAGES.values()] + list(QUERIES.values())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and a WordPiece vocab trained on fixture text."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_bert(out: Path) -> Path:
    """The tiny BERT of `tiny_model_dir`, written to `out` (also used by scripts/chaos.py)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus_text() * 4, vocab_size=400, min_frequency=1, show_progress=False)
    wp.save_model(str(out))
    # from the trained tokenizer object: transformers 5 ignores `vocab_file=` here (every token would be [UNK])
    tokenizer = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True)
    assert tokenizer.tokenize("goldfish ponds") == ["goldfish", "ponds"], "tiny tokenizer lost its vocab"
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 LLaMA with random weights and a BPE vocab trained on fixture text."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def build_tiny_llama(out: Path) -> Path:
    """A decoder-only LLaMA-architecture model for offline tests (also used by scripts/tiny_llama.py): its
    tokenizer is like LLaMA's (BPE, adds <s> but not </s>, no padding token)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus_text() * 4, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tokenizer("goldfish")["input_ids"][0] == tokenizer.bos_token_id
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None)
    LlamaModel(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def tiny_model(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model for tests that write into it."""
    dst = tmp_path / "tiny-bert"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def write_beir(root: Path, split: str = "test") -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for docid, (title, text) in PASSAGES.items():
            f.write(json.dumps({"_id": docid, "title": title, "text": text, "metadata": {}}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    with open(root / "qrels" / f"{split}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in QRELS.items():
            for docid, grade in judged.items():
                f.write(f"{qid}\t{docid}\t{grade}\n")
    return root


@pytest.fixture
def tiny_data_dir(tmp_path, monkeypatch) -> Path:
    """A folder laid out like data/, with the fixture passages, so configs work unchanged on it."""
    root = write_tiny_data(tmp_path / "data")
    monkeypatch.setenv("DR_DATA_DIR", str(root))
    return root


def write_tiny_data(root: Path) -> Path:
    """The `tiny_data_dir` layout under `root` (also used by scripts/chaos.py)."""
    write_beir(root / "scifact", "test")
    shutil.copy(root / "scifact" / "qrels" / "test.tsv", root / "scifact" / "qrels" / "train.tsv")
    pool = root / "msmarco-dl19-pool"
    pool.mkdir(parents=True)
    (pool / "collection.tsv").write_text("".join(f"{d[1:]}\t{x}\n" for d, (_, x) in PASSAGES.items()))
    trec = root / "trec-dl-2019"
    trec.mkdir(parents=True)
    (trec / "topics.dl19-passage.txt").write_text("".join(f"{q[1:]}\t{t}\n" for q, t in QUERIES.items()))
    (trec / "qrels.dl19-passage.txt").write_text(
        "".join(f"{q[1:]} Q0 {d[1:]} {g}\n" for q, j in QRELS.items() for d, g in j.items())
    )
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own dr cache (corpus Arrow files, embeddings), and `precision: auto` means fp32
    whatever the CPU, so that figures compared across processes and runs do not depend on the machine
    (bf16 is tested where it is asked for explicitly)."""
    monkeypatch.setenv("DR_CACHE", str(tmp_path / "dr-cache"))
    monkeypatch.setenv("DR_NATIVE_BF16", "0")
    logging.getLogger("dr").setLevel(logging.INFO)


def write_train_beir(root: Path) -> Path:
    """A BEIR folder whose train split has 36 queries (3 per passage, made of the passage's words)."""
    write_beir(root, "test")
    queries, qrels = {}, []
    for docid, (title, text) in PASSAGES.items():
        words = [w.strip(".;,").lower() for w in text.split()]
        for j in range(3):
            qid = f"t{docid}-{j}"
            queries[qid] = " ".join(words[j * 3 : j * 3 + 4])
            qrels.append((qid, docid))
    with open(root / "queries.jsonl", "a") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(root / "qrels" / "train.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    return root


@pytest.fixture
def train_data_dir(tiny_data_dir) -> Path:
    """`tiny_data_dir` with a 36-query SciFact train split, so training configs run unchanged."""
    shutil.rmtree(tiny_data_dir / "scifact")
    write_train_beir(tiny_data_dir / "scifact")
    return tiny_data_dir
