"""Generated blocks inside hand-written markdown docs, and the machine description they carry.

A generated block sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. `replace_block` swaps
what is between the markers (or inserts the block after the file's intro when there are none) and
leaves every other byte of the file as it was, so prose written around a table survives a rerun.
`scripts/bench.py` writes docs/BENCHMARKS.md and `scripts/results.py` docs/RESULTS.md this way.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from dr.io import atomic_write_text

_FENCE = re.compile(r"^(```|~~~)")
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # fp32 SIMD width, then native bf16 matmul


def markers(name: str) -> tuple[str, str]:
    """The begin and end marker lines of block `name` (HTML comments: invisible when rendered)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"block name {name!r}: use letters, digits, '_', '.' or '-'")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with block `name` holding `body`; everything outside the markers is kept byte for byte.

    Without markers the block is inserted after the intro (`insert_after_intro`). A begin marker without
    its end (or the reverse, or either twice) raises ValueError rather than guessing where the block ends.
    """
    begin, end = markers(name)
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    counts = text.count(begin), text.count(end)
    if counts == (0, 0):
        return insert_after_intro(text, block)
    i, j = text.find(begin), text.find(end)
    if counts != (1, 1) or j < i:
        raise ValueError(f"block {name!r}: expected one {begin!r} followed by one {end!r}, found "
                         f"{counts[0]} begin and {counts[1]} end markers")
    return text[:i] + block + text[j + len(end):]


def insert_after_intro(text: str, block: str) -> str:
    """`block` inserted after the intro: the text between the first heading and the next one (a
    blank line on each side), or at the end when there is no second heading. Headings inside code
    fences do not count. The original text is a subsequence of the result: only the block and the
    blank lines around it are added."""
    lines = text.splitlines(keepends=True)
    headings, fenced = [], False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            headings.append(i)
    if len(headings) >= 2:
        at = headings[1]
        before = "".join(lines[:at])
        gap = "" if before.endswith("\n\n") or not before else ("\n" if before.endswith("\n") else "\n\n")
        return before + gap + block + "\n\n" + "".join(lines[at:])
    if not text or text.endswith("\n\n"):
        return text + block + "\n"
    return text + ("\n" if text.endswith("\n") else "\n\n") + block + "\n"


def write_block(path: str | Path, name: str, body: str) -> Path:
    """Replace (or insert) block `name` of the markdown file `path` in place; a missing file is created
    holding only the block."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, replace_block(text, name, body))
    return path


def format_duration(seconds: float | None) -> str:
    """`15 s`, `28 min 29 s`, `5 h 02 min`; `-` for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpuinfo() -> tuple[str | None, set[str]]:
    """CPU model name and flags from /proc/cpuinfo (Linux); (None, {}) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else None), set(flags.group(1).split()) if flags else set()


def _lscpu() -> dict[str, str]:
    """`lscpu`'s "Field: value" lines (C locale); {} where it is missing or fails."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields}


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        kb = re.search(r"^MemTotal:\s*(\d+)\s*kB", Path("/proc/meminfo").read_text(), re.M)
        return int(kb.group(1)) * 1024 if kb else None
    except OSError:
        return None


def machine() -> dict:
    """What a benchmark or result ran on: CPU model (`lscpu`'s "Model name", else /proc/cpuinfo's, with the
    family and model numbers when lscpu gives them) and which of SIMD_FLAGS it has (`simd`, out of
    `simd_checked`), cores, RAM, GPU, Python and the versions of the libraries that do the arithmetic;
    torch's intra-op thread count as this process sees it."""
    import torch

    model, flags = _cpuinfo()
    lscpu = _lscpu()
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    memory = _memory_bytes()
    return {
        "cpu": lscpu.get("Model name") or model or platform.processor() or platform.machine(),
        "cpu_family": lscpu.get("CPU family"),
        "cpu_model": lscpu.get("Model"),
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "simd_checked": list(SIMD_FLAGS) if flags else [],
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "ram_gb": round(memory / 2**30, 1) if memory else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": _version("transformers"),
        "sentence_transformers": _version("sentence-transformers"),
        "faiss": _version("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"),
    }


def describe_machine(m: dict) -> str:
    """One line for a doc: `AMD EPYC (family 26, model 2; avx2, avx512f, avx512_bf16; no amx_bf16), 2 logical
    cores, 23.4 GB RAM, no GPU, Python 3.11.7, torch ...`; a record without `simd_checked` lists only `simd`."""
    has = list(m.get("simd") or [])
    lacks = [f for f in m.get("simd_checked") or [] if f not in has]
    ids = ", ".join(f"{k} {m[key]}" for key, k in (("cpu_family", "family"), ("cpu_model", "model")) if m.get(key))
    flags = "; ".join(x for x in (", ".join(has), f"no {', '.join(lacks)}" if lacks else "") if x)
    detail = "; ".join(x for x in (ids, flags) if x)
    simd = f" ({detail})" if detail else ""
    cores = f"{m.get('logical_cores')} logical cores"
    if m.get("physical_cores") and m["physical_cores"] != m.get("logical_cores"):
        cores += f" ({m['physical_cores']} physical)"
    parts = [f"{m.get('cpu')}{simd}", cores, f"{m['ram_gb']} GB RAM" if m.get("ram_gb") else "RAM unknown",
             m.get("gpu") or "no GPU", f"{m.get('os')}", f"Python {m.get('python')}", f"torch {m.get('torch')} "
             f"({m.get('torch_threads')} threads)"]
    parts += [f"{label} {m[key]}" for key, label in (("transformers", "transformers"),
                                                     ("sentence_transformers", "sentence-transformers"),
                                                     ("faiss", "faiss")) if m.get(key)]
    return ", ".join(parts)


def invocation(script: str, argv: Sequence[str], make_target: str) -> str:
    """How a generated doc was made: `python scripts/x.py ARGS`, prefixed with `make TARGET` when make ran it
    (make sets MAKELEVEL in its recipes' environment)."""
    command = shlex.join(["python", script, *argv])
    return f"make {make_target} ({command})" if os.environ.get("MAKELEVEL") else command


def today() -> str:
    """The local date and time, to the minute, with the UTC offset."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z")
