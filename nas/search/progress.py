"""One updating progress line on stderr (a plain line every few seconds when stderr is not a terminal)."""
from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, quiet: bool = False, stream=None, every_s: float = 5.0):
        self.total, self.quiet = total, quiet
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.every_s = every_s
        self.start = self.trials_start = time.perf_counter()
        self.done_at_start = 0  # trials counted before ``begin_trials``: outside the rate
        self._last = 0.0
        self._width = 0

    def begin_trials(self, done: int = 0) -> None:
        """The trials start now, ``done`` of them already counted (a resumed run's, or those other workers ended
        while this process scored the references): what came before is in the elapsed time, and neither its
        time nor those trials are in the rate per trial."""
        self.trials_start = time.perf_counter()
        self.done_at_start = done

    def say(self, text: str) -> None:
        """A message of its own, above the progress line."""
        if self.quiet:
            return
        self._clear()
        print(text, file=self.stream, flush=True)

    def update(self, done: int, feasible: int, best: str, timeout: float | None = None, force: bool = False, *,
               invalid: int = 0, duplicates: int = 0) -> None:
        """``done`` trials count toward the total, by every process of the run, ``invalid`` of them invalid
        genomes (no genome, so neither fitting the budget nor not: the feasible share leaves them out);
        ``duplicates`` were reused, uncounted. Those counted since ``begin_trials`` give the rate."""
        if self.quiet:
            return
        now = time.perf_counter()
        if not (self.tty or force or now - self._last >= self.every_s):
            return
        self._last = now
        elapsed = now - self.start
        session_done = done - self.done_at_start
        left = (self.total - done) * (now - self.trials_start) / session_done if session_done > 0 else float("nan")
        if timeout is not None:
            running = now - self.trials_start  # --timeout counts from the first trial, as the runners do
            left = min(left, max(timeout - running, 0.0)) if left == left else max(timeout - running, 0.0)
        genomes = done - invalid
        share = f"{feasible / genomes:.0%}" if genomes > 0 else "-"
        others = ", ".join(f"{n} {what}" for n, what in ((invalid, "invalid"), (duplicates, "duplicates")) if n)
        line = (f"trial {done}/{self.total}  feasible {share}" + (f" ({others})" if others else "")
                + f"  best {best}  elapsed {format_seconds(elapsed)}  left ~{format_seconds(left)}")
        if self.tty:
            pad = max(self._width - len(line), 0)
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def close(self) -> None:
        if self.tty and self._width and not self.quiet:
            self.stream.write("\n")
            self._width = 0
