"""A dependency-free progress bar for the terminal (stderr), quiet when not a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#####-----] 5/10 files  2.1 s`` redrawn in place; one final line when done."""

    def __init__(self, total: int, label: str = "files", stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.label = label
        self.stream = stream
        self.started = time.monotonic()

    def advance(self, ok: bool = True) -> None:
        self.failed += 0 if ok else 1
        self.update(self.done + 1)

    def update(self, done: int) -> None:
        """Set the count (e.g. bytes downloaded) and redraw."""
        self.done = done
        if self.stream.isatty():
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def close(self) -> None:
        prefix = "\r" if self.stream.isatty() else ""
        self.stream.write(prefix + self._line() + "\n")
        self.stream.flush()

    def _line(self, width: int = 30) -> str:
        filled = width * self.done // max(self.total, 1)
        failed = f", {self.failed} failed" if self.failed else ""
        elapsed = time.monotonic() - self.started
        return (
            f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} "
            f"{self.label}{failed}  {elapsed:.1f} s"
        )
