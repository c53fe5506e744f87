"""`+experiment=jpq` on the tiny model: the centroids and the query tower move, codes and passage tower
do not, and `dr.evaluate retriever=pq` on the export reproduces the run's own final metrics."""
from __future__ import annotations

import json

import faiss
import numpy as np
from safetensors.numpy import load_file

from test_tas_app import run_module
from test_train_app import base_args, losses, train


def pq_parts(path):
    index = faiss.read_index(str(path))  # keep the owner alive while its IVF part is read
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(0), ivf.invlists.list_size(0) * ivf.code_size).copy()
    return faiss.vector_to_array(ivf.pq.centroids), codes


def test_jpq_trains_centroids_and_query_tower_and_exports_a_faiss_index(tiny_model, train_data_dir, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = train(["+experiment=jpq", "trainer.max_steps=3", "trainer.eval_every=0", "trainer.save_every=0",
                  "quantizer.subvectors=8", "quantizer.bits=2", "quantizer.opq=false", "quantizer.depth=6", "quantizer.centroid_lr=0.05",
                  *base_args(tiny_model, run)], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(losses(run)) == 3 and all(np.isfinite(losses(run)))
    export = run / "export"
    for name in ("index.faiss", "index.docids", "index.json", "query/model.safetensors", "passage/model.safetensors"):
        assert (export / name).exists(), name
    init_centroids, init_codes = pq_parts(run / "pq-init" / "index.faiss")
    centroids, codes = pq_parts(export / "index.faiss")
    assert not np.allclose(centroids, init_centroids)  # trained
    np.testing.assert_array_equal(codes, init_codes)  # passage codes fixed
    start = load_file(str(tiny_model / "model.safetensors"))
    changed = lambda tower: any(not np.array_equal(tower[k], start[k]) for k in start if k in tower)
    assert changed(load_file(str(export / "query" / "model.safetensors")))
    assert not changed(load_file(str(export / "passage" / "model.safetensors")))
    final = json.loads((run / "metrics.json").read_text())
    assert {"scifact-test", "dl19-pool"} <= final.keys()  # dl19-pool: another corpus, coded with the centroids

    proc = run_module("dr.evaluate", ["retriever=pq", f"model.name_or_path={export}", "model.shared=false",
                                      "model.pooling=mean", "model.passage_max_length=32", "model.show_progress=false",
                                      f"hydra.run.dir={tmp_path / 'eval'}"], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in ("scifact-test", "dl19-pool"):
        for measure, value in final[name].items():
            assert abs(again[name][measure] - value) < 1e-9, (name, measure)
