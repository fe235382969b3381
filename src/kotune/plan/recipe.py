"""A recipe as the planner sees it: the stage (from its first line, `# kotune STAGE ...`), its config dataclass
checked as the stage itself would, and the training jobs it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from pkgutil import resolve_name

from kotune.plan.memory import Job
from kotune.plan.shapes import ModelShape, model_shape

PLANNABLE = ("sft", "pretrain", "reward", "dpo", "ppo")


@dataclass
class PlannedStage:
    title: str  # "sft recipes/sft/x.yaml"
    job: Job
    note: str = ""


def recipe_stage(path: str) -> str:
    """The stage a recipe is for, from its first line (`# kotune sft recipes/...`)."""
    import re

    first = Path(path).read_text(encoding="utf-8").split("\n", 1)[0]
    # The line may chain commands (`# kotune tokenizer train ... && kotune pretrain ...`): the training one counts.
    found = re.findall(r"\bkotune (" + "|".join((*PLANNABLE, "pipeline")) + r")\b", first) if first.startswith("#") else []
    if found:
        return found[-1]
    raise ValueError(f"{path}:1: the first line must name the recipe's command (# kotune sft|pretrain|reward|dpo|ppo|"
                     f"pipeline ...), as every shipped recipe's does")


def _precision(value: str) -> str:
    # The plan is for GPUs: auto resolves to bf16 there (training/config.py resolve_precision).
    return "fp32" if value == "fp32" else "bf16"


def _pretrain_shape(cfg) -> ModelShape:
    if cfg.model:
        return model_shape(cfg.model)
    import torch
    from transformers import AutoModelForCausalLM

    from kotune.models.load import load_tokenizer
    from kotune.plan.shapes import shape_of
    from kotune.pretrain.train import build_config

    if not Path(cfg.tokenizer or "").is_dir():
        raise ValueError(f"tokenizer: folder {cfg.tokenizer} does not exist; a model built from `init` takes its "
                         "vocabulary size from it: train the tokenizer first (see the recipe's first line)")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_config(cfg.init, load_tokenizer(cfg.tokenizer)))
    return shape_of(model, f"init ({cfg.init.arch})")


def _lora(cfg) -> dict:
    lora = getattr(cfg, "lora", None)
    return {} if lora is None else {"lora_r": lora.r, "lora_dropout": lora.dropout,
                                    "lora_targets": tuple(lora.target_modules or ())}


def stage_jobs(stage: str, cfg, title: str) -> list[PlannedStage]:
    """The training job of one stage's config (what is resident on a device at its peak)."""
    if stage == "pretrain":
        shape, t = _pretrain_shape(cfg), cfg.train
        return [PlannedStage(title, Job(shape, "full", t.micro_batch_size, cfg.data.block_size,
                                        _precision(t.precision), t.gradient_checkpointing))]
    shape, t = model_shape(cfg.model), cfg.train
    if stage in ("sft", "reward", "dpo"):  # reward and DPO put the chosen and rejected of each pair through together
        reference = stage == "dpo" and cfg.method == "full" and cfg.algo in ("dpo", "kto")
        note = {"sft": "", "reward": "pairs: chosen + rejected per micro-batch",
                "dpo": "frozen reference in the compute dtype" if reference else "no separate reference model"}[stage]
        return [PlannedStage(title, Job(shape, cfg.method, (1 if stage == "sft" else 2) * t.micro_batch_size,
                                        cfg.data.max_length, _precision(t.precision), t.gradient_checkpointing,
                                        lm_head=stage != "reward", frozen=((shape.params, False),) if reference else (),
                                        **_lora(cfg)), note)]
    # ppo: actor trained; critic = the reward model's backbone + scalar head, trained; reference and reward frozen.
    critic = shape.params - shape.head + shape.hidden
    length = cfg.data.max_prompt_length + cfg.generation.max_new_tokens
    frozen = ((critic, False),) + (((shape.params, False),) if cfg.method == "full" else ())
    job = Job(shape, cfg.method, cfg.ppo.mini_batch_size, length, _precision(t.precision), False,
              frozen=frozen, extra_trained=critic if cfg.algo == "ppo" else 0,
              kv_cache_tokens=cfg.ppo.rollout_batch_size * length, single_device=cfg.algo == "ppo", **_lora(cfg))
    return [PlannedStage(title, job, "actor + critic trained; reference and reward model frozen; one device")]


def plan_recipe(path: str, overrides: list[str] | None = None) -> list[PlannedStage]:
    """Every training job of a stage recipe, or of each training stage of a pipeline recipe (its stages start from
    the pipeline's base model, so they are planned on that model's shape)."""
    from kotune.config import load_config
    from kotune.stages import RECIPE_STAGES

    def load(stage: str, recipe: str, extra: list[str]):
        return load_config(resolve_name(RECIPE_STAGES[stage][1]), recipe, extra)

    stage = recipe_stage(path)
    if stage != "pipeline":
        return stage_jobs(stage, load(stage, path, list(overrides or [])), f"{stage} {path}")
    pipeline = load("pipeline", path, list(overrides or []))
    planned = []
    for name in PLANNABLE:
        section = getattr(pipeline, name, None)
        if section is None or not getattr(section, "recipe", None):
            continue
        sets = [f"{k}={v}" for k, v in (section.set or {}).items()]
        base = [f"model={pipeline.base_model}"] if getattr(pipeline, "base_model", None) else []
        extra = base + ([f"reward_model={pipeline.base_model}"] if name == "ppo" and base else [])
        planned += stage_jobs(name, load(name, section.recipe, sets + extra), f"{name} {section.recipe}")
    return planned
