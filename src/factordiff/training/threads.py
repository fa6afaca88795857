"""How many CPU threads a run uses, and backing off when another process shares the cores.

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()`` OpenMP threads
and wait for the slowest at the end of it. Alone, that is the fastest setting. When another
busy process holds one of the cores, one of those threads is descheduled for a whole
time slice at every operation and the others wait for it: a training step becomes 20-70x
slower instead of the ~2x a fair share of the cores would cost (measured:
benchmarks/contention.py). One thread per process does not wait on anyone.

``ThreadGovernor`` measures instead of guessing: after a warm-up window it times a window
of steps at the full count and one at a single thread and keeps the faster (alone, the full
count; beside another busy process, one thread). It switches at once when steps become
``collapse`` times slower than the kept setting's last window (a process started beside
the run), and every ``probe_every`` steps it times one window of the other setting again,
so a run follows its neighbours coming and going. A probe costs one window in
``probe_every`` steps at the slower setting (~1 %). Every decision that changes the count
is returned as a line saying why, for the progress bar and the log. ``train.threads = N >
0`` fixes the count (nothing adapts: a bitwise-repeatable run, since the thread count can
change float rounding); ``0`` (default) adapts between PyTorch's count (which honours
``OMP_NUM_THREADS``) and 1.
"""

from __future__ import annotations

import statistics

import torch


class ThreadGovernor:
    """Watches step times and sets ``torch``'s thread count (see the module docstring)."""

    def __init__(
        self,
        threads: int = 0,
        *,
        window: int = 10,
        collapse: float = 3.0,
        probe_every: int = 500,
    ) -> None:
        if threads < 0:
            raise ValueError(f"train.threads must be >= 0 (0: adapt); got {threads}")
        self.before = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        self.fixed = threads > 0
        self.full = torch.get_num_threads()
        self.window, self.collapse, self.probe_every = window, collapse, probe_every
        self.kept = self.full  # the setting chosen by the last comparison
        self._times: list[float] = []
        self._last: dict[int, float] = {}  # threads -> median step time of its last window
        self._last_kept = float("inf")  # the kept setting's last window (collapse check)
        self._windows = 0
        self._since_probe = 0

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def restore(self) -> None:
        """The process's thread count as it was before the run (library use, tests)."""
        torch.set_num_threads(self.before)

    def observe(self, seconds: float) -> str | None:
        """One step's wall time; returns a note when the kept thread count changed."""
        if self.fixed or self.full == 1:
            return None
        self._times.append(seconds)
        if len(self._times) < self.window:
            return None
        median, now = statistics.median(self._times), self.threads
        self._times = []
        self._windows += 1
        if self._windows == 1:  # warm-up (allocations, caches): not a measurement
            return None
        self._last[now] = median
        other = 1 if now == self.full else self.full
        if now != self.kept:  # a probe window just ended: compare, keep the faster
            return self._keep(min(self._last, key=self._last.__getitem__))
        if other not in self._last:  # nothing measured at the other count yet: try it
            torch.set_num_threads(other)
            return None
        if now > 1 and median > self.collapse * self._last_kept:
            return self._keep(1, why=f"steps became {median / self._last_kept:.0f}x slower")
        self._last_kept = median
        self._since_probe += self.window
        if self._since_probe >= self.probe_every:
            self._since_probe = 0
            torch.set_num_threads(other)
        return None

    def _keep(self, threads: int, why: str | None = None) -> str | None:
        """Make ``threads`` the kept count; a note when that changes it."""
        before, self.kept = self.kept, threads
        torch.set_num_threads(threads)
        self._last_kept = self._last.get(threads, float("inf"))
        self._since_probe = 0
        if threads == before:
            return None
        rate = {t: 1 / s for t, s in self._last.items()}
        if threads == 1:
            why = why or (f"1 thread runs {rate[1] / rate[before]:.1f}x faster than {before}")
            return (f"threads {before} -> 1: {why}: another process shares the cores, and "
                    "threads that wait for each other collapse; 1 thread costs only the fair "
                    "share (train.threads=N fixes the count)")  # fmt: skip
        return (f"threads 1 -> {threads}: {threads} threads run "
                f"{rate[threads] / rate[1]:.1f}x faster again: the cores are free")  # fmt: skip
