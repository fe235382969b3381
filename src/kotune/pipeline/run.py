"""Run the pipeline's stages in order, reusing those whose inputs did not change, and write the report.

Each stage writes into `run_dir/<stage>` (both evaluations into `run_dir/eval`) and, when it succeeds, a completion
record `run_dir/.stages/<stage>.json`: when it ran, how long it took, and the fingerprint of what it was made from
(its resolved configuration, the content of the files it reads, and which run of each earlier stage it starts
from; see `fingerprint.py`). A rerun skips a stage only when its fingerprint is unchanged; a changed stage is redone
together with every stage that starts from it, and the pipeline says what changed. `--force STAGE` redoes a stage
regardless. A failing stage stops the pipeline with its name, keeping what earlier stages made.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from pkgutil import resolve_name

from kotune.config import ConfigError, apply_overrides, from_dict, read_recipe, save_config, sets, to_dict
from kotune.eval.config import GenerateConfig, JudgeConfig, KobestConfig, LmEvalConfig
from kotune.pipeline.config import ORDER, PipelineConfig
from kotune.pipeline.fingerprint import FileHashes, changes, flatten, strings, summary
from kotune.pipeline.report import StageRun, write_pipeline_report
from kotune.pretrain.tokenizer_config import TokenizerConfig
from kotune.stages import LAUNCHABLE_STAGES, RECIPE_STAGES

MARKERS = ".stages"  # run_dir/.stages/<stage>.json: written when a stage succeeds
STARTED = ".started.json"  # run_dir/.stages/<stage>.started.json: written when it starts, removed when it succeeds
HASHES = "hashes.json"  # run_dir/.stages/hashes.json: content hashes of input files, by their stat
MODEL_STAGES = ("pretrain", "sft", "ppo", "dpo")  # the stages whose output is a model the next stage starts from
NOT_RUN = "not run yet"
# The evaluation stages' runs; those that take `log` show their tables in the pipeline's log
EVAL_RUNS = {"eval_kobest": "kotune.eval.commands.kobest", "eval_lm_eval": "kotune.eval.commands.lm_eval",
             "eval_generate": "kotune.eval.generate_eval.run", "eval_judge": "kotune.eval.judge.run"}
LOGGED_EVALS = ("eval_kobest", "eval_lm_eval")


class StageFailed(RuntimeError):
    """A stage raised; the message names it and where earlier outputs are."""


@dataclasses.dataclass
class Step:
    """What a run will do with one stage, and why."""

    stage: str
    redo: bool
    why: str
    upstream: list[str]  # the earlier stages whose output it reads
    record: dict | None  # its completion record from an earlier run
    cause: bool = False  # redone for a reason of its own, not only because an earlier stage is redone


def _dotted(mapping: dict, prefix: str = "") -> list[str]:
    """`{train: {max_steps: 5}}` and `{train.max_steps: 5}` both become `["train.max_steps=5"]`."""
    items = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            items += _dotted(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={json.dumps(value, ensure_ascii=False)}")
    return items


def _stage_config(name: str, spec, wiring: dict):
    """The stage's recipe + the pipeline's `set` overrides + the paths the pipeline wires in (which win).

    Raises:
        ConfigError: naming the stage, and the recipe file or the pipeline's `set` that holds the bad key.
    """
    where = f"stage {name}: {spec.recipe or 'no recipe'}"
    overrides = _dotted(spec.set)
    try:
        data = apply_overrides(read_recipe(spec.recipe) if spec.recipe else {}, overrides)
        return from_dict(resolve_name(RECIPE_STAGES[name][1]), apply_overrides(data, _dotted(wiring)))
    except ConfigError as e:
        given = [o.partition("=")[0] for o in overrides if e.key and sets(o.partition("=")[0], e.key)]
        raise ConfigError(f"{f'stage {name}: pipeline {name}.set.{given[-1]}' if given else where}: {e}") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _within(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


class Pipeline:
    def __init__(self, cfg: PipelineConfig, force: list[str] | None = None, log=print):
        self.cfg, self.run_dir, self.log = cfg, Path(cfg.run_dir), log
        unknown = [s for s in force or [] if s not in cfg.stages()]
        if unknown:
            raise ValueError(f"--force: unknown stage {unknown[0]!r}; stages: {', '.join(cfg.stages())}")
        self.forced = set(force or [])
        self.models: list[tuple[str, str]] = [] if cfg.base_model is None else [("base", cfg.base_model)]
        self.models += [(s, str(self.out(s))) for s in cfg.stages() if s in MODEL_STAGES]
        self.hashes = FileHashes(self.run_dir / MARKERS / HASHES, log)
        self.runs: dict[str, StageRun] = {}

    def out(self, stage: str) -> Path:
        return self.run_dir / ("eval" if stage.startswith("eval_") else stage)

    def marker(self, stage: str, suffix: str = ".json") -> Path:
        return self.run_dir / MARKERS / f"{stage}{suffix}"

    # --- what each stage runs with --------------------------------------------------------------------------

    def _start_model(self, stage: str) -> str:
        """The newest model made before `stage` (or the base model)."""
        return [path for name, path in self.models if name == "base" or ORDER.index(name) < ORDER.index(stage)][-1]

    def _wiring(self, stage: str) -> dict:
        out = str(self.out(stage))
        if stage == "pretrain":
            return {"output_dir": out, **({"tokenizer": str(self.out("tokenizer"))} if self.cfg.tokenizer else {}),
                    **({"model": self.cfg.base_model} if self.cfg.base_model else {})}
        if stage == "selfinstruct":
            return {"output": str(self.out("selfinstruct") / "generated.jsonl")}
        if stage == "sft":
            wiring = {"model": self._start_model("sft"), "output_dir": out}
            if self.cfg.selfinstruct:
                base = _stage_config("sft", self.cfg.sft, {"model": "-", "output_dir": "-"}).data.files
                wiring["data.files"] = [*base, str(self.out("selfinstruct") / "generated.jsonl")]
            return wiring
        wiring = {"model": str(self.out("sft")), "output_dir": out}
        return {**wiring, "reward_model": str(self.out("reward"))} if stage == "ppo" else wiring

    def resolve(self, stage: str):
        """What `stage` runs with: its config dataclass with the pipeline's paths set (a dict for `check`)."""
        if stage in RECIPE_STAGES:
            return _stage_config(stage, getattr(self.cfg, stage), self._wiring(stage))
        if stage == "check":
            return {"files": list(self.cfg.check)}
        section, out = to_dict(getattr(self.cfg, stage)), str(self.out(stage))
        if stage == "tokenizer":
            return TokenizerConfig(**section, out=out)
        final, *earlier = [path for _, path in reversed(self.models)]  # the final model first
        if stage == "eval_kobest":
            from kotune.eval.kobest import DATA_DIR

            return KobestConfig(**{**section, "data_dir": section["data_dir"] or str(DATA_DIR)}, model=final,
                                baselines=earlier, out=out)
        if stage == "eval_judge":  # the final model against every model this run made (not the base: no chat model)
            from kotune.eval.judge_data import default_questions

            made = [path for name, path in reversed(self.models) if name != "base"]
            return JudgeConfig(**{**section, "questions": section["questions"] or str(default_questions())},
                               models=made, out=out)
        if stage == "eval_lm_eval":
            return LmEvalConfig(**section, model=final, baselines=earlier, out=out)
        from kotune.eval.generate_eval import DEFAULT_PROMPTS

        return GenerateConfig(**{**section, "prompts": section["prompts"] or str(DEFAULT_PROMPTS)}, model=final,
                              baselines=earlier, out=out)

    def validate(self) -> list[str]:
        """Build every stage's configuration as the run will, before any stage runs: a bad key or value in the
        last stage's recipe fails now, not after hours of training.

        Returns:
            One line per stage: `STAGE  OK  (what it is built from)`.

        Raises:
            ConfigError: naming the stage, the file (or the pipeline's `set`) and the key.
        """
        width = max(len(s) for s in self.cfg.stages())
        lines = []
        for stage in self.cfg.stages():
            try:
                self.resolve(stage)
            except ValueError as e:  # a section's own check on the values the pipeline set
                raise e if isinstance(e, ConfigError) else ConfigError(f"stage {stage}: {e}") from None
            spec = getattr(self.cfg, stage)
            source = spec.recipe or "defaults" if stage in RECIPE_STAGES else "the pipeline recipe"
            lines.append(f"  {stage:<{width}}  OK  ({source}{' + set' if getattr(spec, 'set', None) else ''})")
        return lines

    def fingerprint(self, stage: str, settings: dict) -> dict:
        """The resolved settings, the content of every file or folder they name, and the earlier stages' runs.

        A path inside an earlier stage's output names that stage (its run id, not its content: the stage's own
        fingerprint covers what it was made from); the stage's own output and the run folder are not inputs.
        """
        run_dir, cwd = Path(os.path.abspath(self.run_dir)), Path(os.getcwd())
        producers = {s: Path(os.path.abspath(self.out(s))) for s in self.cfg.stages() if not s.startswith("eval_")}
        files: dict[str, str] = {}
        upstream: dict[str, str | None] = {}
        for name in strings(settings):
            if not name.strip() or "\n" in name or len(name) > 4096:
                continue
            path = Path(os.path.abspath(name))
            producer = next((s for s, folder in producers.items() if _within(folder, path)), None)
            if producer is not None and producer != stage:
                upstream[producer] = (_read(self.marker(producer)) or {}).get("run")
            elif not (_within(run_dir, path) or _within(path, run_dir) or _within(path, cwd)) and path.exists():
                files.update(self.hashes.tree(name))
        upstream = {s: upstream[s] for s in ORDER if s in upstream}
        return {"config": flatten(settings), "files": files, "upstream": upstream}

    # --- what a run does -------------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        """Each stage, redone or reused, and why; reads records and hashes inputs, runs nothing."""
        steps: list[Step] = []
        redone: set[str] = set()
        for stage in self.cfg.stages():
            fp = self.fingerprint(stage, _as_dict(self.resolve(stage)))
            record = _read(self.marker(stage))
            before = [u for u in fp["upstream"] if u in redone]
            why, cause = None, True
            if stage in self.forced:
                why = f"--force {stage}"
            elif record is None:
                started = _read(self.marker(stage, STARTED))
                why = f"it started {_shown_date(started.get('started'))} and did not finish" if started else NOT_RUN
            elif not self.out(stage).exists():
                why = f"its output {self.out(stage)} is gone"
            elif "fingerprint" not in record:
                why = "its completion record is older than fingerprints, so what it was made from is unknown"
            else:
                old = record["fingerprint"]
                for u in before:  # an upstream being redone is said once, below, not as "was redone since"
                    fp["upstream"][u] = old.get("upstream", {}).get(u)
                found = changes(old, fp)
                why = summary(found) if found else None
            if why is None and before:
                why, cause = f"it starts from {', '.join(before)}, redone in this run", False
            if why is not None:
                redone.add(stage)
            steps.append(Step(stage, why is not None, why or f"unchanged since {_shown_date(record.get('finished'))}",
                              list(fp["upstream"]), record, cause and why is not None))
        return steps

    def explain(self, steps: list[Step]) -> list[str]:
        """`sft: train.learning_rate 0.002 -> 0.0001; redoing sft, dpo, eval_kobest, eval_generate` per cause."""
        lines = []
        for step in steps:
            if not step.cause or step.why == NOT_RUN and not any(s.record for s in steps):
                continue
            affected = {step.stage}
            for later in steps:
                if later.redo and affected & set(later.upstream):
                    affected.add(later.stage)
            lines.append(f"{step.stage}: {step.why}; redoing {', '.join(s.stage for s in steps if s.stage in affected)}")
        return lines

    def dry_run(self) -> list[Step]:
        """Print what a run would do with each stage, and why; runs and writes nothing."""
        self.validate()
        steps = self.plan()
        if self.run_dir.is_dir():  # keep the hashes, so the run after it does not read a large model again
            self.hashes.save()
        self.log(f"dry run of {self.run_dir}: nothing is run")
        for line in self.explain(steps):
            self.log(line)
        width = max(len(s.stage) for s in steps)
        for step in steps:
            self.log(f"  {step.stage:<{width}}  {'run ' if step.redo else 'skip'}  {step.why}")
        return steps

    def run(self) -> Path:
        self.validate()  # every stage's configuration, before the first stage runs
        steps = self.plan()
        self.hashes.save()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "pipeline.yaml")
        for line in self.explain(steps):
            self.log(line)
        for i, step in enumerate(steps, 1):
            stage, record = step.stage, step.record
            if not step.redo:
                self.log(f"[{i}/{len(steps)}] {stage}: done earlier, skipped ({step.why}; --force {stage} redoes it)")
                self.runs[stage] = StageRun(record.get("seconds", 0.0), record.get("finished"), reused=True)
                continue
            self.log(f"[{i}/{len(steps)}] {stage}" + ("" if step.why == NOT_RUN else f": redoing ({step.why})"))
            self._run_stage(stage, record, [s.stage for s in steps[: i - 1]])
        (self.run_dir / "pipeline.json").write_text(json.dumps(
            {"final_model": self.models[-1][1], "models": self.models, "stages": [s.stage for s in steps],
             "seconds": {s: r.seconds for s, r in self.runs.items()},
             "reused": [s for s, r in self.runs.items() if r.reused]}, indent=1))
        report = write_pipeline_report(self.run_dir, self.cfg, self.models, self.runs)
        self.log(f"report: {report}")
        self.log(f"chat with the final model:  kotune chat {self.run_dir}\n"
                 f"serve it (OpenAI API + web): kotune serve {self.run_dir}")
        return report

    def _run_stage(self, stage: str, record: dict | None, earlier: list[str]) -> None:
        """Run one stage and write its completion record; its earlier record goes first, so a failure leaves none."""
        cfg = self.resolve(stage)
        fp = self.fingerprint(stage, _as_dict(cfg))  # again: the stages it starts from have new run ids now
        self.hashes.save()
        started = _read(self.marker(stage, STARTED))
        # A stage cut short with the same fingerprint keeps its partial output (self-instruct and `train.resume`
        # continue from it); anything else starts from an empty folder. Both evaluations share eval/: kept.
        if not stage.startswith("eval_") and (record is not None or started and started.get("fingerprint") != fp):
            shutil.rmtree(self.out(stage), ignore_errors=True)
        self.marker(stage).unlink(missing_ok=True)
        self.marker(stage).parent.mkdir(parents=True, exist_ok=True)
        began = _now()
        self.marker(stage, STARTED).write_text(json.dumps({"stage": stage, "started": began, "fingerprint": fp},
                                                          ensure_ascii=False, indent=1))
        clock = time.time()
        try:
            self._body(stage, cfg)
        except Exception as e:
            kept = ", ".join(str(self.out(s)) for s in earlier) or "nothing"
            raise StageFailed(f"stage {stage} failed: {e}\nearlier stages' outputs are kept: {kept}; fix the "
                              f"cause and rerun the same command to continue from {stage}") from e
        run = StageRun(time.time() - clock, _now(), reused=False)
        self.marker(stage).write_text(json.dumps(
            {"stage": stage, "run": uuid.uuid4().hex, "started": began, "finished": run.finished,
             "seconds": run.seconds, "fingerprint": fp}, ensure_ascii=False, indent=1))
        self.marker(stage, STARTED).unlink(missing_ok=True)
        self.runs[stage] = run

    # --- stage bodies: each gets what `resolve` returned -----------------------------------------------------

    def _body(self, stage: str, cfg) -> None:
        if stage in RECIPE_STAGES:
            self._train(stage, cfg)
        elif stage == "tokenizer":
            resolve_name("kotune.pretrain.tokenizer.run")(cfg, log=self.log)
        elif stage == "check":
            self._check(cfg)
        elif stage in LOGGED_EVALS:
            resolve_name(EVAL_RUNS[stage])(cfg, log=self.log)
        else:
            resolve_name(EVAL_RUNS[stage])(cfg)

    def _check(self, cfg: dict) -> None:
        from kotune.data.check import run as check

        lines: list[str] = []
        check(cfg["files"], out=lines.append)
        self.out("check").mkdir(parents=True, exist_ok=True)
        (self.out("check") / "check.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for line in lines[:12]:
            self.log(f"  {line}")

    def _train(self, stage: str, cfg) -> None:
        # A stage runs only when it has no completion marker: whatever is in its folder is a failed try (kept only
        # for a resume), so a fresh start may clear it.
        if stage in LAUNCHABLE_STAGES and not getattr(getattr(cfg, "train", None), "resume", False):
            cfg = dataclasses.replace(cfg, overwrite=True)
        if self._launches(stage, cfg):
            self._launch(stage, cfg)
        else:
            resolve_name(RECIPE_STAGES[stage][2])(cfg, log=self.log)

    def _launches(self, stage: str, cfg) -> bool:
        if self.cfg.nproc is None and self.cfg.accelerate_config is None or stage not in LAUNCHABLE_STAGES:
            return False
        from kotune.launch import launch_refusal

        refused = launch_refusal(cfg)
        if refused:
            self.log(f"  {stage} runs in this process: {refused}")
        return not refused

    def _launch(self, stage: str, cfg) -> None:
        """The stage's resolved recipe, written beside the markers, run by `kotune STAGE` under the launcher."""
        from kotune.launch import relaunch

        recipe = self.marker(stage, ".launch.yaml")
        save_config(cfg, recipe)
        code = relaunch([stage, str(recipe)], self.cfg.nproc, self.cfg.accelerate_config)
        if code:
            raise RuntimeError(f"its launched processes exited with code {code} (their output is above); "
                               f"recipe: {recipe}")


def _as_dict(cfg) -> dict:
    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _shown_date(iso: str | None) -> str:
    """`2026-11-30T21:40:12+00:00` -> `2026-11-30 21:40 UTC`."""
    return f"{iso[:10]} {iso[11:16]} UTC" if iso else "an unknown date"


def run(cfg: PipelineConfig, force: list[str] | None = None, dry_run: bool = False, check: bool = False,
        log=print) -> Path | None:
    """Run the pipeline and return the report's path; with `dry_run`, print what it would run and why; with
    `check`, only build every stage's configuration and print OK per stage. Each checks every stage first."""
    pipeline = Pipeline(cfg, force, log)
    if check:
        lines = pipeline.validate()
        log(f"{cfg.run_dir}: {len(lines)} stages check out, nothing run")
        for line in lines:
            log(line)
        return None
    if dry_run:
        pipeline.dry_run()
        return None
    return pipeline.run()
