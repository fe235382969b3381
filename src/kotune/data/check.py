"""`kotune data check FILE...`: validate data files and report every problem with its line (and record number
where a line holds several records)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kotune.common.options import opt
from kotune.data.formats import FORMATS
from kotune.data.loading import LoadResult, load_file


@dataclass
class CheckConfig:
    """`kotune data check`: the files to validate."""

    files: list[str] = opt(help="data files to validate")
    format: str | None = opt(None, "force a format instead of detecting it")


def command(cfg: CheckConfig) -> int:
    """`kotune data check`; `run` keeps its plain signature for the pipeline and tests that call it."""
    return run(cfg.files, cfg.format)


def run(files: list[str], format: str | None = None, out=print) -> int:
    """Print per-file formats, counts per format and per problem kind, then every problem.

    Returns:
        Exit code: 1 if any problem was found, else 0.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"--format: unknown {format!r}; known: {', '.join(FORMATS)}")
    result = LoadResult()
    for path in files:
        load_file(path, result, format)
    for path in files:
        out(f"{path}: {result.formats_per_file.get(path, 'unreadable')}")
    out("records per format:")
    for name, count in sorted(result.records_per_format.items()):
        kind = FORMATS[name].kind
        out(f"  {name}: {count:,} records -> {result.examples_per_format[name]:,} "
            f"{'pairs' if kind == 'preference' else 'examples'} ({kind})")
    kinds = Counter(p.kind for p in result.problems)
    out(f"problems: {len(result.problems):,}" + (" (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(kinds.items())) + ")" if kinds else ""))
    for problem in sorted(result.problems, key=lambda p: (p.path, p.line, -1 if p.index is None else p.index)):
        out(str(problem))
    if result.ignored:  # not problems (the records train), but nothing a user wrote goes unmentioned
        out(f"ignored fields: {len(result.ignored)} (present in the data, not used by its format)")
        for line in result.ignored_lines():
            out(f"  {line}")
    return 1 if result.problems else 0
