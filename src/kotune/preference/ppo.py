"""`kotune ppo`: PPO from the SFT model against the trained reward model, as InstructGPT / KoChatGPT do it:
actor = the SFT policy; reference = a frozen copy of it (per-token KL penalty); reward = the model `kotune reward`
saved; critic = a separate copy of that reward model whose head becomes the value head; GAE; clipped policy
and value losses; a few PPO epochs over each rollout batch. `algo: rloo | grpo` hands the same actor, prompts and
reward model to TRL's trainers instead (`kotune.preference.online`).

Why our own PPO and not TRL's: TRL 1.16 ships no PPOTrainer; its last one is `trl.experimental.ppo` in TRL 1.12.
Pinning 1.12 would downgrade the TRL that the reward, DPO, RLOO and GRPO stages use (one environment holds one
TRL), and that trainer is the one the TRL maintainers dropped. PPO's core is a few hundred lines (`ppo_math`,
`rollout`, this file) that we test piece by piece, and owning it lets chatKoAlpaca's failure be an error rather than
a flat curve. It runs on one device; the stages TRL runs scale with accelerate.

Guards (errors, not warnings), because chatKoAlpaca printed `actor_loss=0, critic_loss=0` for a whole run:
- the reward model must score a fixed probe batch exactly as the saved reward model loaded alone does, and as
  it did when `kotune reward` saved it (`scoring.check_reward_model`);
- no weights may be shared between trained (actor, critic) and frozen (reference, reward) models;
- at the first step, rewards must differ from the values, advantages must not all be zero, and the policy
  gradient norm must be > 0 (`ppo_math.check_first_step`, `check_policy_gradient`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from kotune.common.metrics import MetricsLog
from kotune.common.outputs import METRICS_JSONL
from kotune.models.load import load_tokenizer
from kotune.preference import ppo_math as pm
from kotune.preference.config import PPOConfig
from kotune.preference.heldout import compare, rollout_values, summary_line
from kotune.preference.models import (
    check_lora_start,
    disable_dropout,
    frozen_copy,
    frozen_dtype,
    load_policy,
    load_scalar_model,
    policy_dtype,
    resolve_precision,
)
from kotune.preference.pairs import prepare_prompts
from kotune.preference.rollout import Batch, build_batch, sample_replies, token_logprobs, token_values
from kotune.preference.scoring import check_reward_model, load_reward_model, score_sequences
from kotune.training.distributed import launch_world_size
from kotune.training.stage import finish_stage, start_stage
from kotune.training.tracking import Tracking

CURVES = ["reward", "kl", "policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm"]


@dataclass
class PPOModels:
    """The four models. `ref` is None for a LoRA actor: the reference is the actor with its adapter disabled."""

    actor: torch.nn.Module
    ref: torch.nn.Module | None
    critic: torch.nn.Module
    reward: torch.nn.Module


def build_models(cfg: PPOConfig, device) -> PPOModels:
    """Actor and reference from the SFT model; reward model and critic each loaded from the reward model folder.

    Trained weights (full actor, critic, LoRA adapters) are fp32, autocast computing in the precision; frozen ones
    (reference, reward model, a LoRA actor's base) are held in that precision (`frozen_dtype`): bf16 halves them.
    """
    from kotune.models.lora import apply_lora

    precision = resolve_precision(cfg.train.precision)
    actor = load_policy(cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=policy_dtype(cfg.method, precision))
    ref = None
    if cfg.method == "lora":
        actor = apply_lora(actor, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                           target_modules=cfg.lora.target_modules)  # PEFT keeps the adapters in fp32
    else:
        ref = frozen_copy(actor, precision)
    reward = load_reward_model(cfg.reward_model, trust_remote_code=cfg.trust_remote_code, dtype=frozen_dtype(precision))
    # The critic starts as the trained reward model (InstructGPT), as its own copy with its own head: its values
    # then mean something from the first step, and training it cannot move the rewards.
    critic, _ = load_scalar_model(cfg.reward_model, trust_remote_code=cfg.trust_remote_code)
    for model in (actor, ref, critic, reward):
        if model is not None:
            disable_dropout(model)
            model.to(device)
    return PPOModels(actor, ref, critic, reward)


def _storages(model) -> set[int]:
    return {p.data_ptr() for p in model.parameters()} if model is not None else set()


def check_models(models: PPOModels) -> None:
    """Raises PPOSetupError when a trained model shares weights with a frozen one or with the other trained one, or
    has nothing to train."""
    named = {"actor": models.actor, "reference": models.ref, "critic": models.critic, "reward model": models.reward}
    pairs = [("actor", "reference"), ("actor", "critic"), ("actor", "reward model"), ("critic", "reward model"),
             ("critic", "reference")]
    for a, b in pairs:
        if named[a] is not None and named[b] is not None and _storages(named[a]) & _storages(named[b]):
            raise pm.PPOSetupError(
                f"the {a} and the {b} share weights, so training the {a} would also change the {b} (reference and "
                "reward model must stay fixed, actor and critic must be separate). Load each one on its own."
            )
    if models.ref is None and not hasattr(models.actor, "disable_adapter"):
        raise pm.PPOSetupError("no reference model: without one the actor must be a LoRA (PEFT) model, whose reference "
                               "is the actor with its adapter disabled")
    if not any(p.requires_grad for p in models.actor.parameters()):
        raise pm.PPOSetupError("the policy gradient norm would be 0: the actor has no trainable parameter (a LoRA "
                               "adapter loaded with is_trainable=False, or a frozen model); use method: full or lora")
    if not any(p.requires_grad for p in models.critic.parameters()):
        raise pm.PPOSetupError("the critic has no trainable parameter, so its values can never follow the returns")


def _check_tokenizer(tokenizer, reward_model: str, trust_remote_code: bool) -> None:
    """The reward model must read the same chat format the actor writes."""
    rm_tok = load_tokenizer(reward_model, trust_remote_code=trust_remote_code, key="reward_model")
    if rm_tok.chat_template != tokenizer.chat_template or rm_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"reward_model {reward_model} was trained with another tokenizer or chat template than the actor uses; "
            "train the reward model from the same SFT model (its saved chat_template), or set data.template to match"
        )


def _ref_logprobs(models: PPOModels, batch, temperature: float) -> torch.Tensor:
    if models.ref is not None:
        return token_logprobs(models.ref, batch.input_ids, batch.attention_mask, batch.start, temperature)
    with models.actor.disable_adapter():  # LoRA: the network without the adapter is the SFT model
        return token_logprobs(models.actor, batch.input_ids, batch.attention_mask, batch.start, temperature)


@dataclass
class Experience:
    batch: Batch
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor
    kl: torch.Tensor


@torch.no_grad()
def rollout(cfg: PPOConfig, models: PPOModels, prompts: list[list[int]], tokenizer, autocast, first: bool) -> Experience:
    """Sample replies, score them, and compute per-token rewards, advantages and returns."""
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(models.actor.parameters()).device
    with autocast():  # sampled under the autocast the log-probabilities below and the update use
        replies = sample_replies(models.actor, prompts, cfg.generation, pad_id, eos_id)
    batch = build_batch(prompts, replies, pad_id, eos_id, device)
    temp = cfg.generation.temperature
    with autocast():
        logprobs = token_logprobs(models.actor, batch.input_ids, batch.attention_mask, batch.start, temp)
        ref_logprobs = _ref_logprobs(models, batch, temp)
        values = token_values(models.critic, batch.input_ids, batch.attention_mask, batch.start)
    # Outside autocast, in the reward model's own dtype: the same numbers the probe check compared
    scores = score_sequences(models.reward, batch.sequences, models.reward.config.pad_token_id).to(device)
    if cfg.ppo.missing_eos_penalty is not None:
        scores = scores - cfg.ppo.missing_eos_penalty * (~batch.ended).float()
    rewards, kl = pm.token_rewards(scores, logprobs, ref_logprobs, batch.mask, cfg.ppo.kl_coef)
    values = values * batch.mask
    advantages, returns = pm.gae(rewards, values, batch.mask, cfg.ppo.gamma, cfg.ppo.lam)
    if first:
        pm.check_first_step(scores, values, advantages, batch.mask, kl)
    if cfg.ppo.whiten_advantages:
        advantages = pm.masked_whiten(advantages, batch.mask)
    return Experience(batch, logprobs, values, advantages, returns, scores, kl)


def _clip(params, max_norm: float) -> float:
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))


def update(cfg: PPOConfig, models: PPOModels, exp: Experience, optimizers, autocast, first: bool) -> dict:
    """PPO epochs over one rollout batch; returns mean losses and gradient norms."""
    actor_opt, critic_opt = optimizers
    actor_params = [p for p in models.actor.parameters() if p.requires_grad]
    critic_params = [p for p in models.critic.parameters() if p.requires_grad]
    b = exp.batch
    stats: dict[str, list[float]] = {}
    n = b.input_ids.size(0)
    for _ in range(cfg.ppo.ppo_epochs):
        for idx in torch.randperm(n).split(cfg.ppo.mini_batch_size):
            ids, attn, mask = b.input_ids[idx], b.attention_mask[idx], b.mask[idx]
            with autocast():
                logprobs = token_logprobs(models.actor, ids, attn, b.start, cfg.generation.temperature)
            p_loss, p_stats = pm.policy_loss(logprobs, exp.logprobs[idx], exp.advantages[idx], mask, cfg.ppo.cliprange)
            actor_opt.zero_grad(set_to_none=True)
            if p_loss.requires_grad:
                p_loss.backward()
                p_norm = _clip(actor_params, cfg.train.max_grad_norm)
            else:  # none of the trainable parameters reaches the policy's output
                p_norm = 0.0
            if first:
                pm.check_policy_gradient(p_norm)
                first = False
            actor_opt.step()

            with autocast():
                values = token_values(models.critic, ids, attn, b.start)
            v_loss, v_stats = pm.value_loss(values, exp.values[idx], exp.returns[idx], mask, cfg.ppo.cliprange_value)
            critic_opt.zero_grad(set_to_none=True)
            v_loss.backward()
            v_norm = _clip(critic_params, cfg.train.max_grad_norm)
            critic_opt.step()
            for key, value in {"policy_loss": p_loss.item(), "value_loss": v_loss.item(), "policy_grad_norm": p_norm,
                               "value_grad_norm": v_norm, **p_stats, **v_stats}.items():
                stats.setdefault(key, []).append(value)
    return {k: sum(v) / len(v) for k, v in stats.items()}


def _scheduler(cfg: PPOConfig, optimizer, steps: int):
    """train.lr_scheduler with train.warmup_ratio over the PPO steps (one scheduler step per rollout batch)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.train.lr_scheduler, cfg.train.lr_scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.train.warmup_ratio * steps),
                         num_training_steps=steps)


def _prompt_stream(n: int, batch: int, seed: int):
    """Prompt indices, reshuffled each pass, `batch` at a time."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while True:
        while len(order) < batch:
            order += torch.randperm(n, generator=g).tolist()
        yield order[:batch]
        order = order[batch:]


def run(cfg: PPOConfig, log=print, *, models: PPOModels | None = None) -> Path:
    """Train and save; returns the output folder.

    Args:
        models: already built models (tests, notebooks); every guard still applies to them.

    Outputs: the actor (model, or LoRA adapter) with the tokenizer and its chat_template, critic/ (value model),
    ppo_report.json (data counts, reward-model checks, first/last step, held-out reward and KL before and after),
    metrics.jsonl, curves.png, config.yaml.
    """
    if cfg.algo != "ppo":
        from kotune.preference.online import run_online

        return run_online(cfg, log)
    if launch_world_size() > 1:
        raise ValueError(cfg.multi_process_error())
    if cfg.train.gradient_checkpointing:
        raise ValueError("train.gradient_checkpointing: algo ppo does not checkpoint activations (its models fit "
                         "on one device by design); use method=lora, or algo=rloo / grpo, which do")
    check_lora_start(cfg.model, cfg.method)
    ctx = start_stage(cfg, "ppo", log)
    out, precision, device, tokenizer = ctx.out, ctx.precision, ctx.device, ctx.tokenizer
    _check_tokenizer(tokenizer, cfg.reward_model, cfg.trust_remote_code)
    prompts, held, data_report = prepare_prompts(cfg.data, tokenizer, cfg.train.seed, log)
    steps = cfg.train.total_steps(len(prompts), cfg.ppo.rollout_batch_size)
    models = models or build_models(cfg, device)
    check_models(models)
    probe_extra = [ids for _, ids in prompts[:2]]  # prompts alone: a probe even without reward_probe.json
    reward_dtype = frozen_dtype(precision)
    reward_check = check_reward_model(models.reward, cfg.reward_model, trust_remote_code=cfg.trust_remote_code,
                                      extra_sequences=probe_extra, dtype=reward_dtype)
    log(f"reward model checked: scores the probe as {cfg.reward_model} does (max diff "
        f"{reward_check['max_diff_vs_loaded_alone']:.2g})")

    def autocast():  # as the SFT loop's accelerator does: bf16 autocast on GPU and on CPU alike
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    actor_opt = torch.optim.AdamW([p for p in models.actor.parameters() if p.requires_grad],
                                  lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    critic_opt = torch.optim.AdamW([p for p in models.critic.parameters() if p.requires_grad],
                                   lr=cfg.train.critic_learning_rate, weight_decay=cfg.train.weight_decay)
    schedulers = [_scheduler(cfg, opt, steps) for opt in (actor_opt, critic_opt)]

    def heldout_values() -> dict[str, list[float]] | None:
        if not held:
            return None
        return rollout_values(models.actor, lambda b: _ref_logprobs(models, b, cfg.generation.temperature),
                              models.reward, [ids for _, ids in held], cfg.generation, tokenizer, seed=cfg.train.seed,
                              batch_size=cfg.ppo.rollout_batch_size, autocast=autocast)

    before = heldout_values()
    metrics = MetricsLog(out / METRICS_JSONL)
    tracking = Tracking(cfg.train.report_to, out, cfg)  # train.report_to, through accelerate's trackers
    stream = _prompt_stream(len(prompts), cfg.ppo.rollout_batch_size, cfg.train.seed)
    log(f"ppo: {steps} steps x {cfg.ppo.rollout_batch_size} prompts ({len(prompts):,} prompts), "
        f"method {cfg.method}, {precision}, {device}")
    from tqdm.auto import tqdm

    rows = []
    started = time.perf_counter()
    for step in tqdm(range(steps), desc="ppo", unit="step"):
        batch_prompts = [prompts[i][1] for i in next(stream)]
        exp = rollout(cfg, models, batch_prompts, tokenizer, autocast, first=step == 0)
        stats = update(cfg, models, exp, (actor_opt, critic_opt), autocast, first=step == 0)
        for scheduler in schedulers:
            scheduler.step()
        row = {
            "step": step + 1, "reward": float(exp.scores.mean()), "reward_std": float(exp.scores.std(correction=0)),
            "kl": float(exp.kl.sum(1).mean()), "non_score_reward": float(-cfg.ppo.kl_coef * exp.kl.sum(1).mean()),
            **stats, "response_length": float(exp.batch.reply_lengths.mean()),
            "eos_fraction": float(exp.batch.ended.float().mean()), "elapsed_s": time.perf_counter() - started,
        }
        if not all(math.isfinite(v) for v in row.values()):
            raise FloatingPointError(f"non-finite PPO statistics at step {step + 1}: {row}; lower the learning rates")
        rows.append(row)
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
            metrics.write(row)
            tracking.log(row)
    tracking.finish()

    # The reward model must not have moved during training (shared weights, an optimizer over the wrong params).
    end_check = check_reward_model(models.reward, cfg.reward_model, trust_remote_code=cfg.trust_remote_code,
                                   extra_sequences=probe_extra, dtype=reward_dtype)
    heldout = None
    if before is not None:
        heldout = compare(before, heldout_values(), before_is=f"{cfg.model} (the reference)", seed=cfg.train.seed)
        log(summary_line(heldout))
    models.critic.save_pretrained(out / "critic", safe_serialization=True)
    tokenizer.save_pretrained(out / "critic")
    report = {"template": ctx.template, "data": data_report, "reward_model_check": reward_check,
              "reward_model_check_end": end_check, "first_step": rows[0], "last_step": rows[-1],
              "heldout": heldout}
    finish_stage(ctx, models.actor, curves=CURVES, title=f"PPO from {cfg.model}", report=report,
                 adapter=cfg.method == "lora")
    log(f"reward {rows[0]['reward']:.4f} -> {rows[-1]['reward']:.4f}, KL to reference {rows[0]['kl']:.4f} -> "
        f"{rows[-1]['kl']:.4f}; saved actor to {out}")
    return out

