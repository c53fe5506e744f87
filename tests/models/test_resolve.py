"""A model name that is neither a local directory nor loadable says so, instead of the hub's error."""
from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from dr.models import resolve
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.models.resolve import ModelNotFoundError, resolve_model_path


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 with an empty private hub cache (never the network, never the user's cache)."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _dual(name: str) -> DualEncoder:
    return DualEncoder(EncoderConfig(name_or_path=name, show_progress=False))


@pytest.mark.parametrize("name", ["outputs/2024-01-01/run/export", "/no/such/dir", "no-such-model",
                                  "no-such-org/no-such-model"])
def test_missing_model_offline_says_no_such_directory(offline, tmp_path, name):
    with pytest.raises(ModelNotFoundError) as e:
        _dual(name)
    message = str(e.value)
    assert f"{name!r}" in message
    assert "no such local directory" in message
    assert "not a model that can be loaded offline" in message and "HF_HUB_OFFLINE=1" in message
    assert "Repo id must be in the form" not in message and "couldn't connect" not in message
    assert isinstance(e.value, FileNotFoundError)  # callers catching OSError still do


def test_missing_ranker_offline_says_no_such_directory(offline):
    with pytest.raises(ModelNotFoundError, match=r"'outputs/ranker/export'.*no such local directory"):
        CrossEncoder(CrossEncoderConfig(name_or_path="outputs/ranker/export", show_progress=False))


def test_a_hub_name_in_the_cache_still_loads_offline(offline, tiny_model_dir):
    """The check only rewrites a failure: a cached hub id loads as before."""
    repo = offline / "models--tiny-org--tiny-bert"
    commit = "0" * 40
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert resolve_model_path("tiny-org/tiny-bert") == "tiny-org/tiny-bert"
    assert _dual("tiny-org/tiny-bert").dim == 32


def test_online_failure_names_the_hub_error(monkeypatch, tmp_path):
    def unreachable(name, filename, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(resolve, "cached_file", unreachable)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path("no-such-model")
    message = str(e.value)
    assert "no such local directory" in message and "Hugging Face hub" in message
    assert "couldn't connect" in message  # the hub's own reason, as the cause


def test_existing_directory_is_returned_unchanged(tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
