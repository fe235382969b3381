"""Peak host memory of this process, for the per-process lines multi-process training logs."""

from __future__ import annotations

import resource
import sys


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since it started (`ru_maxrss`: KiB on Linux, bytes on
    macOS). A peak, not the current size: it still shows what loading the model took after the load is over."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
