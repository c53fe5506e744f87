"""FAISS indexes over numpy arrays: the only package that imports faiss."""
from dr.index.blocks import (BlockIndex, build_block_index, exact_search, merge_topk, recall_at_k,
                             search_blocks)
from dr.index.faiss_index import (DenseIndex, IndexConfig, build_index, faiss_build, gpu_devices, kmeans_assign,
                                  load_index, place_index, use_gpu)

__all__ = ["BlockIndex", "DenseIndex", "IndexConfig", "build_block_index", "build_index", "exact_search",
           "faiss_build", "gpu_devices", "kmeans_assign", "load_index", "merge_topk", "place_index",
           "recall_at_k", "search_blocks", "use_gpu"]
