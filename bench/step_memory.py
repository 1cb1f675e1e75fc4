"""Peak RSS and CPU of a stage step by step, in this process: the sampler behind `datasets_memory.py` and
`gaps_memory.py` (issue 18).

A thread reads the process's RSS every 20 ms and files it under the step running; a step is a function
wrapped with `wrap`, which also sums its CPU time. `suffix` is added to every label (e.g. the dataset
being built), so one step can be told apart per dataset."""

from __future__ import annotations

import os
import resource
import threading
import time

OUTSIDE = "outside the steps below"


class StepMemory:
    def __init__(self) -> None:
        self.step = OUTSIDE
        self.suffix = ""
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._page = os.sysconf("SC_PAGE_SIZE")

    def start(self) -> None:
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self._page / 2**20
            self.peaks[self.step] = max(self.peaks.get(self.step, 0.0), rss)
            time.sleep(0.02)

    def wrap(self, owner, name: str, label: str, labelled: bool = True, on_call=None) -> None:
        """Replace `owner.name` with a version that labels the samples taken while it runs (unless
        `labelled` is False: CPU only) and adds its CPU time to `label`; `on_call(args)` runs first."""
        f = getattr(owner, name)

        def timed(*a, **k):
            before, t0 = self.step, time.process_time()
            if on_call is not None:
                on_call(a)
            if labelled:
                self.step = label + self.suffix
            try:
                return f(*a, **k)
            finally:
                self.step = OUTSIDE + self.suffix if before.startswith(OUTSIDE) else before
                self.cpu[label] = self.cpu.get(label, 0.0) + time.process_time() - t0

        setattr(owner, name, timed)

    def report(self, stage: str, cpu_s: float, width: int = 55) -> None:
        time.sleep(0.1)  # one more sample
        print(f"{stage} stage: {cpu_s:.1f} s CPU, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        for label, mib in self.peaks.items():
            print(f"  {label:{width}s} {mib:8.0f} MiB")
        for label, s in self.cpu.items():
            print(f"  {label:{width}s} {s:8.1f} s CPU")
