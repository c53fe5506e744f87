"""Evaluation: retrieve -> run -> ir_measures."""
