"""Compressed indexes trained with the query encoder (JPQ)."""
from dr.quantizer.pq import ProductQuantizer, QuantizerConfig, build_pq_index, load_pq_index

__all__ = ["ProductQuantizer", "QuantizerConfig", "build_pq_index", "load_pq_index"]
