"""Peak host memory of a process: this one's for the per-process lines multi-process training logs, a child's for
the tests that bound it."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """The most resident memory process `pid` (default: this one) has held since it started. A peak, not the
    current size: it still shows what loading the model took after the load is over.

    Linux: `VmHWM` of /proc/PID/status, the high-water mark of that process's own address space. Not `ru_maxrss`:
    Linux carries that across fork and exec, so a process started by a large parent (a pytest run holding GBs)
    reports the parent's size as its own peak. Another process's peak is None once it has exited (an exited
    process has no address space) or where there is no /proc.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    if pid != "self":
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
