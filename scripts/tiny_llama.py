"""Write the tiny random LLaMA of the tests (tests/conftest.py::build_tiny_llama) to a directory, for
offline runs of model=tiny_llama:

    python scripts/tiny_llama.py outputs/tiny-llama
    python -m dr.train model=tiny_llama +experiment=bm25_negatives trainer.max_steps=20
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=REPO / "outputs" / "tiny-llama")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("dr_test_fixtures", REPO / "tests" / "conftest.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    print(fixtures.build_tiny_llama(args.out))


if __name__ == "__main__":
    main()
