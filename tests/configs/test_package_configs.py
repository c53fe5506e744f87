"""The Hydra configs ship inside the package: a wheel holds every yaml under dr/configs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dr.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]


def test_config_dir_is_inside_the_package():
    import dr

    assert Path(CONFIG_DIR).parent == Path(dr.__file__).parent
    assert (Path(CONFIG_DIR) / "train.yaml").is_file() and (Path(CONFIG_DIR) / "experiment").is_dir()


@pytest.mark.slow
def test_wheel_holds_every_config(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(REPO / "dr", src / "dr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("dr-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"dr/configs/{p.relative_to(CONFIG_DIR)}" for p in Path(CONFIG_DIR).rglob("*.yaml")}
    assert want and want <= names, sorted(want - names)
