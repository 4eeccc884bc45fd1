"""CPU time and peak resident memory of named processes over a stretch of a benchmark.

Read from /proc (Linux): CPU as utime + stime of every thread, the peak as VmHWM,
which writing 5 to clear_refs resets to the current RSS, so the peak is the one of the
measured stretch. Ray replicas are found by their process titles.

``python load_tests/procstats.py`` prints the memory at rest of every Ray process on
this machine and of the ``pixserve up`` driver (a running ``make run``): RSS, and PSS,
which splits shared pages among the processes that share them, so the total is what
the platform really holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _command_lines() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process here that can still be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), [part.decode(errors="replace") for part in argv]


def ray_processes() -> dict[int, str]:
    """Every Ray process here (pid -> title: ``ray::ServeReplica:pixserve:Upscaler``,
    ``raylet``, ``gcs_server`` and the like), and the ``pixserve up`` driver."""
    found: dict[int, str] = {}
    for pid, argv in _command_lines():
        title, words = argv[0].strip(), " ".join(argv)
        if "bin/pixserve up" in words:  # the driver that deployed the app
            found[pid] = "pixserve up"
        elif title.startswith("ray::") or any(
            part in words for part in ("/raylet", "/gcs_server", "ray/dashboard", "ray/_private")
        ):
            found[pid] = title.split(" ")[0].rsplit("/", 1)[-1]
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages split among their sharers."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def replica_pids(deployments: list[str], app: str = "pixserve") -> dict[str, int]:
    """The pid of one live replica of each named Serve deployment of ``app``, found by
    the process title Ray gives actors (``ray::ServeReplica:APP:DEPLOYMENT``)."""
    pids: dict[str, int] = {}
    for pid, argv in _command_lines():
        prefix, _, name = argv[0].strip().rpartition(":")
        if prefix == f"ray::ServeReplica:{app}" and name in deployments:
            pids.setdefault(name, pid)
    return pids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> bool:
    """Make VmHWM the current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class ProcessStats:
    """Started at construction: CPU seconds and peak RSS of each process since then."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.resettable = {name: reset_peak(pid) for name, pid in processes.items()}
        self.baseline_rss = {name: rss_mb(pid) for name, pid in processes.items()}
        self.started = {name: cpu_seconds(pid) for name, pid in processes.items()}

    def cpu_seconds(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - self.started[name] for name, pid in self.processes.items()}

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak RSS since the start (since the process began where it could not be reset)."""
        return {name: rss_mb(pid, "VmHWM") for name, pid in self.processes.items()}

    def peak_added_mb(self) -> dict[str, float]:
        """How far the peak rose above the RSS at the start."""
        peaks = self.peak_rss_mb()
        return {name: peaks[name] - self.baseline_rss[name] for name in self.processes}


def footprint() -> list[tuple[str, float, float]]:
    """(title, RSS MB, PSS MB) of every Ray process, largest first."""
    rows = []
    for pid, title in ray_processes().items():
        try:
            rows.append((title, rss_mb(pid), pss_mb(pid)))
        except OSError:  # it ended while being read
            continue
    return sorted(rows, key=lambda row: -row[2])


if __name__ == "__main__":
    table = footprint()
    for title, rss, pss in table:
        print(f"{title:<48} RSS {rss:>7.0f} MB  PSS {pss:>7.0f} MB")
    print(
        f"{len(table)} processes: RSS {sum(r[1] for r in table):.0f} MB, "
        f"PSS {sum(r[2] for r in table):.0f} MB"
    )
