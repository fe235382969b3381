"""`kotune plan`: the memory table of a recipe per engine, a verdict for N GPUs of G GiB, and computed changes
that make it fit; `--json` for machines, `markdown_table` for README's table of the seed recipes."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from kotune.common.options import opt

from kotune.plan.memory import ENGINES, GIB, Estimate, Job, estimate
from kotune.plan.recipe import PlannedStage, plan_recipe

# What a GPU gives a training process: the CUDA context and the caching allocator's fragmentation take the rest.
RESERVED_GIB = 1.0
USABLE = 0.95


def usable_bytes(gpu_memory_gib: float) -> float:
    return gpu_memory_gib * USABLE * GIB - RESERVED_GIB * GIB


def engines_for(gpus: int) -> tuple[str, ...]:
    return ("single",) if gpus == 1 else ENGINES[1:]


def fitting(job: Job, gpus: int, gpu_memory: float) -> list[tuple[str, Estimate]]:
    limit = usable_bytes(gpu_memory)
    found = [(e, estimate(job, e, gpus)) for e in engines_for(gpus)]
    return [(e, est) for e, est in found if est is not None and est.peak <= limit]


def _describe(job: Job) -> str:
    return (f"{job.method}, micro-batch {job.micro_batch} x {job.length} tokens, {job.precision}, gradient "
            f"checkpointing {'on' if job.checkpointing else 'off'}")


def suggestions(job: Job, gpus: int, gpu_memory: float, limit: int = 4) -> list[dict]:
    """Changes that make the job fit, each computed (not guessed), least intrusive first."""
    candidates: list[tuple[str, Job, int]] = []
    if not job.checkpointing:
        candidates.append(("train.gradient_checkpointing=true", replace(job, checkpointing=True), gpus))
    ckpt = replace(job, checkpointing=True)
    micro = job.micro_batch
    while micro > 1:
        micro //= 2
        candidates.append((f"train.micro_batch_size={micro} train.gradient_checkpointing=true (accumulation keeps "
                           "the global batch)", replace(ckpt, micro_batch=micro), gpus))
    gc = "" if job.checkpointing else " train.gradient_checkpointing=true"
    if job.method == "full":
        candidates.append(("method=lora", replace(job, method="lora"), gpus))
        if gc:
            candidates.append(("method=lora" + gc, replace(ckpt, method="lora"), gpus))
    if job.method != "qlora":
        candidates.append(("method=qlora" + gc, replace(ckpt, method="qlora"), gpus))
    for more in (2, 4, 8):
        if more > gpus:
            candidates.append((f"{more} GPUs (--nproc {more})", ckpt, more))
    out = []
    for change, changed, n in candidates:
        fits = fitting(changed, n, gpu_memory)
        if fits:
            engine, est = min(fits, key=lambda item: item[1].peak)
            out.append({"change": change, "gpus": n, "engine": engine, "peak_gib": round(est.peak / GIB, 1)})
        if len(out) >= limit:
            break
    return out


def plan_stage(stage: PlannedStage, gpus: int, gpu_memory: float) -> dict:
    job = stage.job
    per_engine = {}
    for engine in ENGINES:
        est = estimate(job, engine, gpus)
        other = estimate(replace(job, checkpointing=not job.checkpointing), engine, gpus)
        per_engine[engine] = None if est is None else {
            "components_gib": {k: v / GIB for k, v in est.components.items()}, "peak_gib": est.peak / GIB,
            ("peak_without_checkpointing_gib" if job.checkpointing else "peak_with_checkpointing_gib"): other.peak / GIB,
            "host_load_gib": {k: v / GIB for k, v in est.host_load.items()}}
    methods = {}
    for method in ("full", "lora", "qlora"):
        if method != job.method and not (job.single_device and method == "qlora"):
            peaks = {e: estimate(replace(job, method=method), e, gpus) for e in ENGINES}
            methods[method] = {e: None if est is None else est.peak / GIB for e, est in peaks.items()}
    fits = [e for e, _ in fitting(job, gpus, gpu_memory)]
    return {"title": stage.title, "note": stage.note, "model": job.model.name, "parameters": job.model.params,
            "setting": _describe(job), "checkpointing": job.checkpointing, "gpus": gpus, "gpu_memory_gib": gpu_memory,
            "usable_gib": usable_bytes(gpu_memory) / GIB, "engines": per_engine, "peak_gib_with_method": methods,
            "fits_with": fits, "suggestions": [] if fits else suggestions(job, gpus, gpu_memory)}


def render(plan: dict) -> str:
    """The plan of one stage as a table: components (rows) by engine (columns), GiB per GPU."""
    engines = [e for e in engines_for(plan["gpus"]) if plan["engines"][e] is not None]
    n = plan["gpus"]
    heads = [e if e == "single" else f"{e} x{n}" for e in engines]
    rows = sorted({k for e in engines for k in plan["engines"][e]["components_gib"]},
                  key=lambda k: min(list(plan["engines"][e]["components_gib"]).index(k) if k in
                                    plan["engines"][e]["components_gib"] else 99 for e in engines))
    width = max(len(r) for r in [*rows, "peak without checkpointing", "host RAM/process at load, first only"]) + 2
    count = plan["parameters"]
    size = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
    lines = [f"{plan['title']}: {plan['model']} ({size} parameters)",
             f"  {plan['setting']}" + (f"; {plan['note']}" if plan["note"] else ""),
             "  GiB per GPU".ljust(width + 2) + "".join(h.rjust(11) for h in heads)]

    def row(name: str, values) -> str:
        return "  " + name.ljust(width) + "".join(("-" if v is None else f"{v:.1f}").rjust(11) for v in values)

    for r in rows:
        lines.append(row(r, [plan["engines"][e]["components_gib"].get(r) for e in engines]))
    lines.append(row("peak", [plan["engines"][e]["peak_gib"] for e in engines]))
    other = "peak_without_checkpointing_gib" if plan["checkpointing"] else "peak_with_checkpointing_gib"
    label = "peak without checkpointing" if plan["checkpointing"] else "peak with checkpointing"
    lines.append(row(label, [plan["engines"][e].get(other) for e in engines]))
    for method, peaks in plan["peak_gib_with_method"].items():
        lines.append(row(f"peak with method={method}", [peaks[e] for e in engines]))
    for name, key in (("host RAM/process at load", "every process"),
                      ("host RAM/process at load, first only", "other processes, first loads")):
        lines.append(row(name, [plan["engines"][e]["host_load_gib"][key] for e in engines]))
    where = f"{n} x {plan['gpu_memory_gib']:g} GiB" if n > 1 else f"one {plan['gpu_memory_gib']:g} GiB GPU"
    if plan["fits_with"]:
        lines.append(f"  fits on {where} (usable {plan['usable_gib']:.1f} GiB each) with: {', '.join(plan['fits_with'])}")
    else:
        lines.append(f"  does not fit on {where} (usable {plan['usable_gib']:.1f} GiB each)")
        for s in plan["suggestions"]:
            lines.append(f"    fits with {s['change']}: {s['engine']} on {s['gpus']} GPU(s), peak {s['peak_gib']} GiB")
        if not plan["suggestions"]:
            lines.append("    nothing tried fits (gradient checkpointing, smaller micro-batches, LoRA/QLoRA, up to 8 GPUs)")
    return "\n".join(lines)


@dataclass
class PlanConfig:
    """`kotune plan`: the recipe to plan and the GPUs to plan it on."""

    recipe: str = opt(help="a training recipe (sft, pretrain, reward, dpo, ppo) or a pipeline recipe")
    overrides: list[str] = opt([], "key=value overrides, e.g. method=lora model=EleutherAI/polyglot-ko-1.3b",
                               cli="rest")
    gpus: int = opt(1, "GPUs to train on", metavar="N")
    gpu_memory: float = opt(80.0, "memory of each GPU", metavar="GiB")
    as_json: bool = opt(False, "the plan as JSON", flag="--json")

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"gpus: must be at least 1, got {self.gpus}")
        if self.gpu_memory <= 0:
            raise ValueError(f"gpu_memory: must be positive, got {self.gpu_memory}")


def run(cfg: PlanConfig, print_=print) -> int:
    """Print the plan of every training job of `cfg.recipe`; exit code 0 when each fits, 1 otherwise."""
    plans = [plan_stage(s, cfg.gpus, cfg.gpu_memory) for s in plan_recipe(cfg.recipe, cfg.overrides)]
    if cfg.as_json:
        print_(json.dumps(plans, indent=1))
    else:
        print_("\n\n".join(render(p) for p in plans))
    return 0 if all(p["fits_with"] for p in plans) else 1


# README's table: the seed recipes on the seed models' shapes. A preference recipe starts from an SFT run folder;
# it is planned on the base model that folder is trained from.
TABLE_ROWS = [
    ("recipes/sft/polyglot-ko-1.3b_full.yaml", []),
    ("recipes/sft/chat_42dot-style.yaml", []),
    ("recipes/preference/chatkoalpaca_polyglot-ko-1.3b_rm.yaml", ["model=EleutherAI/polyglot-ko-1.3b"]),
    ("recipes/preference/chatkoalpaca_polyglot-ko-1.3b_dpo.yaml", ["model=EleutherAI/polyglot-ko-1.3b"]),
    ("recipes/preference/chatkoalpaca_polyglot-ko-1.3b_ppo.yaml",
     ["model=EleutherAI/polyglot-ko-1.3b", "reward_model=EleutherAI/polyglot-ko-1.3b"]),
    ("recipes/sft/polyglot-ko-1.3b_full.yaml", ["model=EleutherAI/polyglot-ko-5.8b"]),
    ("recipes/sft/polyglot-ko-12.8b_lora.yaml", []),
    ("recipes/sft/polyglot-ko-12.8b_lora.yaml", ["method=qlora"]),
    ("recipes/sft/polyglot-ko-12.8b_lora.yaml", ["method=full", "train.learning_rate=2e-5"]),
]


def markdown_table(gpus: int = 8) -> str:
    """README's memory table, computed: peak GiB per GPU for each seed recipe on one GPU and sharded over `gpus`."""
    lines = [f"| recipe (overrides) | model | setting | one GPU | DDP x{gpus} | FSDP2 x{gpus} | ZeRO-3 x{gpus} | "
             "host RAM/process at load: all load / first only (ZeRO-3) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for recipe, overrides in TABLE_ROWS:
        for stage in plan_recipe(recipe, overrides):
            cells = []
            for engine in ("single", "ddp", "fsdp2", "zero3"):
                est = estimate(stage.job, engine, gpus)
                cells.append("n/a" if est is None else f"{est.peak / GIB:.1f}")
            load = estimate(stage.job, "zero3", gpus) or estimate(stage.job, "single", gpus)
            host = f"{load.host_load['every process'] / GIB:.1f} / {load.host_load['other processes, first loads'] / GIB:.1f}"
            name = f"`{recipe.removeprefix('recipes/')}`" + (f" {' '.join(overrides)}" if overrides else "")
            lines.append(f"| {name} | {stage.job.model.name} | {_describe(stage.job)} | {' | '.join(cells)} | {host} |")
    return "\n".join(lines)

