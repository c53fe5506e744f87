"""faiss, imported on first use with an error that says how to install it.

dr depends on no faiss build by itself: `pip install 'dr[cpu]'` brings faiss-cpu and `pip install 'dr[gpu]'`
faiss-gpu. Both ship one `faiss` module, and pip installs a package's base requirements whatever extras
are asked for, so a base requirement on faiss-cpu would put both builds into a GPU install. Code that
never builds an index (BM25, the reports) runs without faiss.
"""
from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = ("faiss is not installed: pip install 'dr[cpu]' (faiss-cpu) or 'dr[gpu]' (faiss-gpu, CUDA 12); "
           "`make install` does the first, `make install GPU=1` the second")


class _LazyFaiss:
    _module: ModuleType | None = None

    def __getattr__(self, name: str):
        if _LazyFaiss._module is None:
            try:
                _LazyFaiss._module = importlib.import_module("faiss")
            except ImportError as e:
                raise ImportError(INSTALL) from e
        return getattr(_LazyFaiss._module, name)


faiss = _LazyFaiss()
