"""The `kotune eval kobest` and `kotune eval lm-eval` commands: run the evaluation, print its tables, rewrite
report.md. The runs (`kobest.run`, `lm_tasks.run`) only compute and save results, so the pipeline's stages can
call them and show the tables in their own log.
"""

from __future__ import annotations

from collections.abc import Callable

from kotune.eval.config import KobestConfig, LmEvalConfig
from kotune.eval.runs import KOBEST_JSON, LM_EVAL_JSON, out_dir


def kobest(cfg: KobestConfig, log=print) -> dict:
    """`kotune eval kobest MODEL`: see `kotune.eval.kobest.run`."""
    from kotune.eval.kobest import run
    from kotune.eval.report import kobest_console_table

    return finish(cfg, run(cfg), kobest_console_table, KOBEST_JSON, log)


def lm_eval(cfg: LmEvalConfig, log=print) -> dict:
    """`kotune eval lm-eval MODEL --tasks NAMES|DIR`: see `kotune.eval.lm_tasks.run`."""
    from kotune.eval.lm_tasks import run
    from kotune.eval.report import lm_eval_console_table

    return finish(cfg, run(cfg), lm_eval_console_table, LM_EVAL_JSON, log)


def finish(cfg, data: dict, table: Callable[[dict], str], results: str, log=print) -> dict:
    """Show `data` as `table` and rewrite the report of the run's output folder; returns `data`."""
    from kotune.eval.report import write_report

    out = out_dir(cfg)
    log(table(data))
    report = write_report(out)
    log(f"wrote {out / results} and {report}")
    return data
