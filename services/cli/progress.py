"""A dependency-free progress bar for the terminal (stderr): count, rate, ETA, and a
note (the item in progress); redrawn in place on a TTY, one final line otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    """``[#####-----] 5/10 files, 1 failed  2.1/s  ETA 2 s  (tile 3/8)`` in place."""

    def __init__(self, total: int, label: str = "files", stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.label = label
        self.note = ""
        self.stream = stream
        self.started = time.monotonic()
        self.lock = threading.Lock()  # worker threads report results

    def advance(self, ok: bool = True) -> None:
        self.failed += 0 if ok else 1
        self.update(self.done + 1)

    def update(self, done: int, note: str | None = None) -> None:
        """Set the count (and the note) and redraw."""
        with self.lock:
            self.done = done
            self.note = self.note if note is None else note
            if self.stream.isatty():
                self.stream.write("\r\033[K" + self._line())
                self.stream.flush()

    def write(self, line: str) -> None:
        """A line of its own above the bar (stdout), the bar redrawn below it."""
        with self.lock:
            if self.stream.isatty():
                self.stream.write("\r\033[K")
            print(line, flush=True)
            if self.stream.isatty():
                self.stream.write(self._line())
                self.stream.flush()

    def close(self) -> None:
        prefix = "\r\033[K" if self.stream.isatty() else ""
        self.note = ""
        self.stream.write(prefix + self._line() + "\n")
        self.stream.flush()

    def _line(self, width: int = 30) -> str:
        filled = width * self.done // max(self.total, 1)
        failed = f", {self.failed} failed" if self.failed else ""
        elapsed = time.monotonic() - self.started
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} "
                f"{self.label}{failed}  {elapsed:.1f} s")  # fmt: skip
        if 0 < self.done < self.total and elapsed > 0:
            rate = self.done / elapsed
            line += f"  {rate:.2g}/s  ETA {(self.total - self.done) / rate:.0f} s"
        return line + (f"  ({self.note})" if self.note else "")
