"""FAISS indexes over numpy arrays."""
from dr.index.faiss_index import DenseIndex, IndexConfig, build_index, kmeans_assign, load_index

__all__ = ["DenseIndex", "IndexConfig", "build_index", "kmeans_assign", "load_index"]
