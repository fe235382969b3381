"""Keep the libraries' chatter off the terminal, and in the run's log file instead.

DeepSpeed announces "Setting accelerator to CPU" on every import, transformers prints FutureWarnings (one landed
inside a streamed chat reply), lm-eval and bitsandbytes log warnings about their own set-up. None of it is
something a kotune user can act on, and it buries kotune's own messages. At kotune's entry:

- Python warnings (kotune raises none of its own), and records below ERROR from loggers that are not kotune's
  (or uvicorn's, whose lines are the server's access log), go to the run's log file instead of the terminal;
  errors still reach the terminal.
- Until a stage names its log file (`attach_log_file`, called when it opens its output folder) records are kept
  in memory, so nothing from the start of a run is lost.

`KOTUNE_VERBOSE=1` turns all of this off.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

LOG_FILE = "libraries.log"  # in a run's output folder: what the libraries said during the run
_SHOWN = ("kotune", "uvicorn", "__main__")  # loggers whose records stay on the terminal
_BUFFER_LIMIT = 5000


class _RunLog:
    """Library records and warnings as text lines: held in memory until a log file is attached."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.path: Path | None = None

    def write(self, text: str) -> None:
        if self.path is None:
            if len(self.lines) < _BUFFER_LIMIT:
                self.lines.append(text)
            return
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text.rstrip("\n") + "\n")
        except OSError:  # the folder went away (a test cleaned up): the message is not worth failing the run for
            pass

    def attach(self, path: Path) -> None:
        self.path = path
        held, self.lines = self.lines, []
        for line in held:
            self.write(line)


RUN_LOG = _RunLog()
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _third_party(name: str) -> bool:
    return not any(name == shown or name.startswith(shown + ".") for shown in _SHOWN)


class _QuietLogger(logging.Logger):
    """A logger class whose third-party records below ERROR go to the run log rather than to any handler (the
    libraries add their own terminal handlers, and Python's last-resort handler prints the others)."""

    def callHandlers(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if record.levelno < logging.ERROR and _third_party(record.name):
            RUN_LOG.write(_FORMAT.format(record))
            return
        super().callHandlers(record)


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    # kotune itself never warns (what a user must know is printed or raised), so every warning is a library's.
    RUN_LOG.write(f"{category.__name__}: {message} ({filename}:{lineno})")


def quiet_libraries() -> None:
    """Install the routing described in the module docstring (once per process; before libraries are imported,
    so that their loggers are created with it)."""
    if os.environ.get("KOTUNE_VERBOSE") or logging.getLoggerClass() is _QuietLogger:
        return
    logging.setLoggerClass(_QuietLogger)
    warnings.showwarning = _showwarning
    # datasets' split-generation bars (lm-eval loads KoBEST through it) say nothing about kotune's progress.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    sys.stderr.flush()


def attach_log_file(folder: str | Path) -> Path:
    """Send what the libraries said so far, and everything they say from now on, to `folder/libraries.log`."""
    path = Path(folder) / LOG_FILE
    RUN_LOG.attach(path)
    return path
