"""Encoders: the dual encoder, pooling, export."""
