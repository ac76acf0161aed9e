"""What the bench scripts share: header and tail, child processes, tables, machine peaks.

Every script prints the same header (command, Python, platform, CPUs, library versions,
load average), runs each side in a monitored child process (:func:`run_child`: timestamped
output lines, the process tree's peak RSS, tailed ``metrics.ndjson``), and ends with the
same tail (time taken, load average, figures saved as JSON). The machine's own bounds,
sgemm peak and copy bandwidth, are measured here once for every script that compares with
them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.05
RESULT_MARKER = "BENCH_RESULT="


# --------------------------------------------------------------------------- printing


def say(message: str = "") -> None:
    print(message, flush=True)


def load_line() -> str:
    """The 1, 5 and 15 minute load averages, as printed before every measured run."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def heading(title: str, load: bool = False) -> None:
    say(f"\n{title}\n{'=' * len(title)}")
    if load:
        say(f"load average (1/5/15 min): {load_line()}")


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def section_parser(sections: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for ``--only a,b``: the named sections, each one of ``sections``."""

    def parse(value: str) -> list[str]:
        names = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [n for n in names if n not in sections]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown section(s) {', '.join(unknown) or '(none)'}; choose from "
                f"{', '.join(sections)}"
            )
        return names

    return parse


def add_common_options(parser: argparse.ArgumentParser, sections: Sequence[str] = ()) -> None:
    """The options every script has: ``--only`` (where it has sections), ``--json`` and the
    hidden ``--_child MODE SPEC`` by which a script runs parts of itself in a child."""
    if sections:
        parser.add_argument(
            "--only",
            type=section_parser(sections),
            metavar="SECTIONS",
            help=f"comma-separated sections to run (default all): {','.join(sections)}",
        )
    parser.add_argument("--json", metavar="OUT", help="also write every figure to OUT as JSON")
    parser.add_argument("--_child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)


def run_child_mode(
    args: argparse.Namespace, modes: dict[str, Callable[[dict[str, Any]], None]]
) -> bool:
    """Run the ``--_child`` mode a parent asked for; False when this is no child."""
    if not args._child:
        return False
    mode, spec = args._child
    modes[mode](json.loads(spec))
    return True


# --------------------------------------------------------------------------- header and tail


def versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of the named distributions (None where one is missing)."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {d: version(d) for d in names}


def print_header(title: str, libraries: Iterable[str]) -> dict[str, Any]:
    """The header every script starts with; returns the machine facts for the JSON."""
    v = versions(libraries)
    say(title)
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    say(
        f"python {platform.python_version()} on {platform.platform()}, CPUs: {os.cpu_count()}, "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
    )
    say(f"load average (1/5/15 min): {load_line()}")
    return {
        "versions": v,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def save_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write the figures so far (also after each section, so an interrupted run keeps them)."""
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2, default=str) + "\n")


def finish(figures: dict[str, Any], started: float, json_path: str | None) -> None:
    """The tail every script ends with: time taken, load average now, figures saved."""
    figures["elapsed_s"] = time.perf_counter() - started
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    say(f"\nDone in {figures['elapsed_s']:.0f} s; load average now {load_line()}.")
    if json_path:
        save_json(json_path, figures)
        say(f"Figures saved to {json_path}")


# --------------------------------------------------------------------------- child runs


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Both sides wait passively: with OpenMP's default spinning, two torch threads on two
    # vCPUs that the host does not schedule together ran steps 20-35x slower here (the lm
    # package sets the same default for itself). Pass OMP_WAIT_POLICY to override.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra)
    return env


def self_command(script: str, mode: str, spec: dict[str, Any]) -> list[str]:
    """``script`` (a bench file's ``__file__``) re-run in one of its ``--_child`` modes."""
    return [sys.executable, str(Path(script).resolve()), "--_child", mode, json.dumps(spec)]


def emit(result: dict[str, Any]) -> None:
    """How a ``--_child`` mode hands its figures back to the parent."""
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)


@dataclass
class ChildRun:
    """One monitored child process: its timestamped output lines, memory and exit."""

    returncode: int
    wall_seconds: float
    lines: list[tuple[float, str]]  # (seconds since start, line without newline)
    records: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # tailed ndjson
    peak_rss_polled: int = 0  # bytes, summed over the process tree
    peak_rss_rusage: int = 0  # bytes, the child's ru_maxrss from wait4

    @property
    def peak_rss_mb(self) -> float:
        return max(self.peak_rss_polled, self.peak_rss_rusage) / 1e6

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 15) -> str:
        return "\n".join("    " + line for _, line in self.lines[-n:])

    def marker(self, prefix: str) -> str | None:
        """The value of the last ``prefix...`` line the child printed."""
        for _, line in reversed(self.lines):
            if line.startswith(prefix):
                return line[len(prefix) :]
        return None

    def result(self) -> dict[str, Any]:
        """The JSON document an internal ``--_child`` mode printed."""
        value = self.marker(RESULT_MARKER)
        if value is None:
            raise RuntimeError(f"the child printed no result; its output ends:\n{self.tail()}")
        data: dict[str, Any] = json.loads(value)
        return data


class NdjsonTail:
    """Reads complete new lines of the first ``metrics.ndjson`` found under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: Path | None = None
        self.offset = 0
        self.buffer = b""
        self.searched = -1.0

    def poll(self, now: float, out: list[tuple[float, dict[str, Any]]], final: bool) -> None:
        if self.path is None:
            if now - self.searched < 0.5 and not final:  # a directory walk: not every poll
                return
            self.searched = now
            found = sorted(self.root.rglob("metrics.ndjson")) if self.root.exists() else []
            if not found:
                return
            self.path = found[0]
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        self.offset += len(chunk)
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        for raw in complete:
            if raw.strip():
                try:
                    out.append((now, json.loads(raw)))
                except json.JSONDecodeError:
                    continue


class TreeRss:
    """Summed RSS of a process and its descendants, cheap enough to sample every 50 ms.

    Listing descendants scans /proc, so it is refreshed only every ``REFRESH_SECONDS``;
    reading the known processes' RSS is one small file each.
    """

    REFRESH_SECONDS = 1.0

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.procs: list[Any] = [self.root]
        self.refreshed = 0.0

    def sample(self, now: float) -> int:
        psutil = self._psutil
        if now - self.refreshed >= self.REFRESH_SECONDS:
            self.refreshed = now
            try:
                self.procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return 0
        total = 0
        for proc in self.procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def run_child(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    tail_dir: Path | None = None,
    echo: Callable[[str], bool] | None = None,
    on_record: Callable[[float, dict[str, Any]], None] | None = None,
) -> ChildRun:
    """Run ``cmd`` to completion while timestamping its output and watching its memory.

    stdout and stderr are merged and read line by line on a thread, each line stamped with
    the seconds since the process was started. ``tail_dir``: also tail the
    ``metrics.ndjson`` that appears under it, passing each new record to ``on_record``.
    ``echo(line)``: print the lines it accepts.
    """
    lines: list[tuple[float, str]] = []
    records: list[tuple[float, dict[str, Any]]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.rstrip("\n")
            lines.append((time.perf_counter() - start, text))
            if echo is not None and echo(text):
                say(f"    {text}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail = NdjsonTail(tail_dir) if tail_dir is not None else None
    rss = TreeRss(proc.pid)
    peak = 0
    while True:
        # wait4 (not Popen.poll) so the exit status comes with this child's own rusage.
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        now = time.perf_counter() - start
        if tail is not None:
            seen = len(records)
            tail.poll(now, records, final=pid != 0)
            if on_record is not None:
                for t, record in records[seen:]:
                    on_record(t, record)
        if pid != 0:
            break
        peak = max(peak, rss.sample(now))
        time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    return ChildRun(
        returncode=proc.returncode,
        wall_seconds=wall,
        lines=lines,
        records=records,
        peak_rss_polled=peak,
        peak_rss_rusage=rusage.ru_maxrss * 1024,  # Linux reports KiB
    )


# --------------------------------------------------------------------------- machine peaks


def sgemm_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul speed with ``threads`` torch threads: an n^3 ``mm``,
    the median of ``repeats`` after a warm-up. What a compute-bound step could reach."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def copy_bandwidth_gbs(threads: int, mb: int = 512, repeats: int = 5) -> float:
    """This machine's memory bandwidth: bytes read + written by a ``torch`` copy of ``mb``
    MB, the median of ``repeats`` after a warm-up. What a memory-bound step could reach."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(mb * 2**18)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * src.numel() * 4 / statistics.median(times[1:]) / 1e9
