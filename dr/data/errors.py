"""Input errors that name the file and line, and the policy for strict vs lenient reading."""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """Bad input. The message names the file and (1-based) line when there is one."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass
class ReadPolicy:
    """`strict` raises on the first bad record; lenient skips it, counts it and logs a summary.

    Nothing is dropped silently: every skip is counted by reason in `skipped` and logged by `report`.
    """

    strict: bool = True
    skipped: Counter = field(default_factory=Counter)

    def bad(self, path: str | Path, line: int | None, message: str) -> None:
        if self.strict:
            raise DataFormatError(path, line, message)
        # one summary line per kind of problem, not per id: quoted ids are elided from the key
        reason = re.sub(r"'[^']*'", "...", message.split(":")[0])
        key = f"{Path(path).name}: {reason}"
        self.skipped[key] += 1
        if sum(self.skipped.values()) <= 20:  # the summary in report() covers the rest
            logger.warning("skipping %s:%s: %s", path, line, message)

    def report(self) -> None:
        for reason, n in sorted(self.skipped.items()):
            logger.warning("lenient read skipped %d record(s): %s", n, reason)
