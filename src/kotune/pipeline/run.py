"""Run the pipeline's stages in order, skipping those already done, and write the report.

Each stage writes into `run_dir/<stage>` (both evaluations into `run_dir/eval`) and, when it succeeds, a marker
`run_dir/.stages/<stage>.json` (its settings and duration). A rerun skips every stage with a marker; `--force STAGE` redoes that stage and all after it, since
their inputs change. A failing stage stops the pipeline with its name, keeping what earlier stages made.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from kotune.config import apply_overrides, from_dict, save_config, to_dict
from kotune.pipeline.config import ORDER, PipelineConfig
from kotune.stages import LAUNCHABLE_STAGES, RECIPE_STAGES

MARKERS = ".stages"  # run_dir/.stages/<stage>.json: written when a stage succeeds


class StageFailed(RuntimeError):
    """A stage raised; the message names it and where earlier outputs are."""


def _import(dotted: str):
    import importlib

    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


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
    """The stage's recipe + the pipeline's `set` overrides + the paths the pipeline wires in (which win)."""
    import yaml

    data = yaml.safe_load(Path(spec.recipe).read_text(encoding="utf-8")) if spec.recipe else {}
    data = apply_overrides(data or {}, _dotted(spec.set))
    data = apply_overrides(data, _dotted(wiring))
    return from_dict(_import(RECIPE_STAGES[name][1]), data, name)


class Pipeline:
    def __init__(self, cfg: PipelineConfig, force: list[str] | None = None, log=print):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.log = log
        unknown = [s for s in force or [] if s not in ORDER]
        if unknown:
            raise ValueError(f"--force: unknown stage {unknown[0]!r}; stages: {', '.join(cfg.stages())}")
        stages = cfg.stages()
        first_forced = min((stages.index(s) for s in force or [] if s in stages), default=None)
        self.forced = set(stages[first_forced:]) if first_forced is not None else set()
        self.models: list[tuple[str, str]] = [] if cfg.base_model is None else [("base", cfg.base_model)]
        self.timings: dict[str, float] = {}

    def out(self, stage: str) -> Path:
        return self.run_dir / stage

    # --- stage bodies: each returns the settings recorded in its marker -------------------------------------

    def check(self) -> dict:
        from kotune.data.check import run as check

        lines: list[str] = []
        code = check(self.cfg.check, out=lines.append)
        self.out("check").mkdir(parents=True, exist_ok=True)
        (self.out("check") / "check.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for line in lines[:12]:
            self.log(f"  {line}")
        return {"files": self.cfg.check, "problems": code != 0}

    def tokenizer(self) -> dict:
        from kotune.pretrain.tokenizer import run as train

        t = self.cfg.tokenizer
        train(t.corpus, vocab_size=t.vocab_size, out=str(self.out("tokenizer")), style=t.style, log=self.log)
        return to_dict(t)

    def _train(self, stage: str, wiring: dict) -> dict:
        if stage in LAUNCHABLE_STAGES:  # a stage runs only when it has no marker: what is in its folder is a failed try
            wiring = {**wiring, "overwrite": True}
        cfg = _stage_config(stage, getattr(self.cfg, stage), wiring)
        if self._launches(stage, cfg):
            self._launch(stage, cfg)
        else:
            _import(RECIPE_STAGES[stage][2])(cfg, log=self.log)
        return to_dict(cfg)

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

        recipe = self.run_dir / MARKERS / f"{stage}.launch.yaml"
        save_config(cfg, recipe)
        code = relaunch([stage, str(recipe)], self.cfg.nproc, self.cfg.accelerate_config)
        if code:
            raise RuntimeError(f"its launched processes exited with code {code} (their output is above); "
                               f"recipe: {recipe}")

    def pretrain(self) -> dict:
        wiring = {"output_dir": str(self.out("pretrain"))}
        if self.cfg.tokenizer:
            wiring["tokenizer"] = str(self.out("tokenizer"))
        if self.cfg.base_model:
            wiring["model"] = self.cfg.base_model
        return self._train("pretrain", wiring)

    def selfinstruct(self) -> dict:
        return self._train("selfinstruct", {"output": str(self.out("selfinstruct") / "generated.jsonl")})

    def sft(self) -> dict:
        wiring = {"model": self.models[-1][1], "output_dir": str(self.out("sft"))}
        if self.cfg.selfinstruct:
            base = _stage_config("sft", self.cfg.sft, {"model": "-", "output_dir": "-"}).data.files
            wiring["data.files"] = [*base, str(self.out("selfinstruct") / "generated.jsonl")]
        return self._train("sft", wiring)

    def reward(self) -> dict:
        return self._train("reward", {"model": str(self.out("sft")), "output_dir": str(self.out("reward"))})

    def ppo(self) -> dict:
        return self._train("ppo", {"model": str(self.out("sft")), "reward_model": str(self.out("reward")),
                                   "output_dir": str(self.out("ppo"))})

    def dpo(self) -> dict:
        return self._train("dpo", {"model": str(self.out("sft")), "output_dir": str(self.out("dpo"))})

    def eval_kobest(self) -> dict:
        from kotune.eval.kobest import run as kobest

        k = self.cfg.eval_kobest
        final, *earlier = [path for _, path in reversed(self.models)]
        kobest(final, tasks=k.tasks, shots=k.shots, limit=k.limit, batch_size=k.batch_size, out=self.out("eval"),
               baselines=earlier)
        return to_dict(k)

    def eval_generate(self) -> dict:
        from kotune.eval.generate_eval import DEFAULT_PROMPTS
        from kotune.eval.generate_eval import run as generate

        g = self.cfg.eval_generate
        final, *earlier = [path for _, path in reversed(self.models)]
        generate(final, prompts=g.prompts or DEFAULT_PROMPTS, max_new_tokens=g.max_new_tokens, limit=g.limit,
                 out=self.out("eval"), baselines=earlier)
        return to_dict(g)

    # --- driver ------------------------------------------------------------------------------------------------

    def _record_model(self, stage: str) -> None:
        if stage in ("pretrain", "sft", "ppo", "dpo"):
            self.models.append((stage, str(self.out(stage))))

    def run(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "pipeline.yaml")
        stages = self.cfg.stages()
        for i, stage in enumerate(stages, 1):
            marker = self.run_dir / MARKERS / f"{stage}.json"
            if marker.is_file() and stage not in self.forced:
                self.log(f"[{i}/{len(stages)}] {stage}: done earlier, skipped (--force {stage} redoes it)")
                self.timings[stage] = json.loads(marker.read_text()).get("seconds", 0.0)
                self._record_model(stage)
                continue
            self.log(f"[{i}/{len(stages)}] {stage}")
            if stage in self.forced and not stage.startswith("eval_"):
                shutil.rmtree(self.out(stage), ignore_errors=True)
            started = time.time()
            try:
                settings = getattr(self, stage)()
            except Exception as e:
                kept = ", ".join(str(self.out(s)) for s in stages[: i - 1]) or "nothing"
                raise StageFailed(f"stage {stage} failed: {e}\nearlier stages' outputs are kept: {kept}; fix the "
                                  f"cause and rerun the same command to continue from {stage}") from e
            self.timings[stage] = time.time() - started
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"stage": stage, "seconds": self.timings[stage], "settings": settings},
                                         ensure_ascii=False, indent=1, default=str))
            self._record_model(stage)
        final = self.models[-1][1]
        (self.run_dir / "pipeline.json").write_text(json.dumps(
            {"final_model": final, "models": self.models, "stages": stages, "seconds": self.timings}, indent=1))
        from kotune.pipeline.report import write_pipeline_report

        report = write_pipeline_report(self.run_dir, self.cfg, self.models, self.timings)
        self.log(f"report: {report}")
        self.log(f"chat with the final model:  kotune chat {self.run_dir}\n"
                 f"serve it (OpenAI API + web): kotune serve {self.run_dir}")
        return report


def run(cfg: PipelineConfig, force: list[str] | None = None, log=print) -> Path:
    return Pipeline(cfg, force, log).run()
