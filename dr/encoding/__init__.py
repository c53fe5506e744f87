"""Corpus and query encoding shared by evaluation, dev selection, the miner and `dr.mine`: batch plans
that do not depend on the process count, sharded encoding, the on-disk embedding cache, sharded search."""
