"""Peak host memory of this process, for the per-process lines multi-process training logs."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since it started. A peak, not the current size: it still
    shows what loading the model took after the load is over.

    Linux: `VmHWM` of /proc/self/status, the high-water mark of this process's own address space. Not `ru_maxrss`:
    Linux carries that across fork and exec, so a process started by a large parent (a pytest run holding GBs)
    reports the parent's size as its own peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
