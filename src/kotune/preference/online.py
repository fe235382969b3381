"""`kotune ppo` with `algo: rloo | grpo`: TRL's online trainers, scored by the trained reward model.

The reward model is loaded and checked exactly as for our PPO (probe batch against the saved model) and wrapped
as a TRL reward function that tokenizes prompts as the reward model was trained (`scoring.RewardModelFunction`).
Neither algorithm has a critic: the advantage of a completion is its reward against the other completions of the
same prompt (RLOO: leave-one-out mean; GRPO: group mean and std). chatKoAlpaca's failure therefore shows up as every
completion of every prompt getting the same reward; the callback below stops the run if the first step says so.
"""

from __future__ import annotations

from pathlib import Path

from kotune.models.load import is_adapter
from kotune.preference.models import check_lora_start, frozen_dtype, load_policy, policy_dtype, trl_precision_args
from kotune.preference.heldout import compare, rollout_values, summary_line
from kotune.preference.pairs import prepare_prompts
from kotune.preference.rollout import token_logprobs
from kotune.preference.ppo_math import PPOSetupError
from kotune.preference.scoring import RewardModelFunction, check_reward_model, load_reward_model
from kotune.preference.trl_backend import announce_processes, metrics_callback, start_stage
from kotune.training.stage import finish_stage
from kotune.training.tracking import trl_config_callbacks, trl_report_to

CURVES = ["reward", "reward_std", "kl", "loss", "grad_norm", "completions/mean_length"]


def _first_step_guard():
    from transformers import TrainerCallback

    class FirstStepGuard(TrainerCallback):
        """At the first logged step: the completions of each prompt must not all get the same reward (TRL logs the
        fraction of prompts where they do as `frac_reward_zero_std`); if they do everywhere, every advantage is 0."""

        def __init__(self) -> None:
            self.done = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.done or not logs or "frac_reward_zero_std" not in logs:
                return
            self.done = True
            if logs["frac_reward_zero_std"] == 1.0:
                raise PPOSetupError(
                    "at the first step every completion of every prompt got the same reward as the other completions "
                    "of its prompt, so every advantage is 0 and the policy gradient is 0: the reward model does not "
                    "tell replies apart (untrained or constant head), or the completions are all identical."
                )

    return FirstStepGuard()


def _trainer(cfg, model, tokenizer, reward_fn, dataset, out: Path, precision: str, callbacks: list, steps: int):
    from peft import LoraConfig

    from kotune.models.lora import target_modules_for

    if cfg.algo == "rloo":
        from trl import RLOOConfig as Args
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Args
        from trl import GRPOTrainer as Trainer
    g, p = cfg.generation, cfg.ppo
    args = Args(
        output_dir=str(out / "trainer"), per_device_train_batch_size=p.rollout_batch_size,
        num_generations=p.num_generations, max_completion_length=g.max_new_tokens, temperature=g.temperature,
        top_k=g.top_k, top_p=g.top_p, beta=p.kl_coef, num_iterations=p.ppo_epochs, epsilon=p.cliprange,
        learning_rate=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay, max_steps=steps,
        lr_scheduler_type={"constant": "constant_with_warmup"}.get(cfg.train.lr_scheduler, cfg.train.lr_scheduler),
        warmup_steps=cfg.train.warmup_ratio, max_grad_norm=cfg.train.max_grad_norm, seed=cfg.train.seed,
        logging_steps=cfg.train.log_every, activation_checkpointing=cfg.train.gradient_checkpointing,
        save_strategy="no", **trl_report_to(cfg.train.report_to, out), **trl_precision_args(precision),
    )
    peft_config = None
    if cfg.method == "lora":
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 task_type="CAUSAL_LM",
                                 target_modules=target_modules_for(model.config.model_type, cfg.lora.target_modules))
    return Trainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset, processing_class=tokenizer,
                   callbacks=callbacks, peft_config=peft_config)


def _heldout_evaluator(cfg, trainer, reward, tokenizer, prompts: list[list[int]]):
    """Held-out reward (and KL to the reference) of the trainer's current policy, `heldout.rollout_values`.

    The reference is TRL's frozen copy (method full, kl_coef > 0) or the policy with its adapter disabled (LoRA);
    with method full and kl_coef 0 TRL holds none, and the KL is left out rather than doubling the memory.
    """
    def reference(batch):
        if getattr(trainer, "ref_model", None) is not None:
            return token_logprobs(trainer.ref_model, batch.input_ids, batch.attention_mask, batch.start,
                                  cfg.generation.temperature)
        with trainer.model.disable_adapter():
            return token_logprobs(trainer.model, batch.input_ids, batch.attention_mask, batch.start,
                                  cfg.generation.temperature)

    has_reference = getattr(trainer, "ref_model", None) is not None or hasattr(trainer.model, "disable_adapter")
    return lambda: rollout_values(trainer.model, reference if has_reference else None, reward, prompts,
                                  cfg.generation, tokenizer, seed=cfg.train.seed,
                                  batch_size=cfg.ppo.rollout_batch_size)


def run_online(cfg, log=print) -> Path:
    """RLOO or GRPO; same outputs as PPO (without critic/)."""
    from datasets import Dataset

    check_lora_start(cfg.model, cfg.method)
    if cfg.ppo.rollout_batch_size % cfg.ppo.num_generations:
        raise ValueError(f"ppo.rollout_batch_size ({cfg.ppo.rollout_batch_size}) must be a multiple of "
                         f"ppo.num_generations ({cfg.ppo.num_generations}) for algo {cfg.algo}")
    if cfg.method == "full" and cfg.ppo.kl_coef > 0 and is_adapter(cfg.model):
        # TRL reloads the reference from the model's config path, which for a merged adapter is the raw base.
        raise ValueError(f"algo {cfg.algo} with method full reloads its KL reference from the model path, and {cfg.model} "
                         "is a LoRA adapter: merge it first (`kotune lora merge`) and point model at the merged folder")
    ctx = start_stage(cfg, "ppo", log)
    out, precision, tokenizer, log = ctx.out, ctx.precision, ctx.tokenizer, ctx.log
    prompts, held, data_report = prepare_prompts(cfg.data, tokenizer, cfg.train.seed, log)
    steps = cfg.train.total_steps(len(prompts), cfg.ppo.rollout_batch_size // cfg.ppo.num_generations)

    reward_dtype = frozen_dtype(precision)  # frozen: held in bf16 under bf16
    reward = load_reward_model(cfg.reward_model, trust_remote_code=cfg.trust_remote_code, dtype=reward_dtype)
    reward.to(ctx.device)
    check = check_reward_model(reward, cfg.reward_model, trust_remote_code=cfg.trust_remote_code,
                               extra_sequences=[ids for _, ids in prompts[:2]], dtype=reward_dtype)
    model = load_policy(cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=policy_dtype(cfg.method, precision))
    dataset = Dataset.from_list([{"prompt": [m.as_dict() for m in msgs]} for msgs, _ in prompts])
    metrics = metrics_callback(out)
    trainer = _trainer(cfg, model, tokenizer, RewardModelFunction(reward, tokenizer), dataset, out, precision,
                       [metrics, _first_step_guard(), *trl_config_callbacks(cfg, out)], steps)
    log(f"{cfg.algo}: {steps} steps, {cfg.ppo.rollout_batch_size} completions per step "
        f"({cfg.ppo.num_generations} per prompt), method {cfg.method}, {precision}")
    announce_processes(trainer, cfg.algo)
    evaluate = _heldout_evaluator(cfg, trainer, reward, tokenizer, [ids for _, ids in held]) if held else None
    before = evaluate() if evaluate and ctx.is_main else None
    trainer.train()
    if not ctx.is_main:
        return out
    heldout = None
    if before is not None:
        heldout = compare(before, evaluate(), before_is=f"{cfg.model} (the reference)", seed=cfg.train.seed)
        log(summary_line(heldout))
    rows = metrics.rows
    report = {"algo": cfg.algo, "template": ctx.template, "data": data_report, "reward_model_check": check,
              "first_step": rows[0] if rows else None, "last_step": rows[-1] if rows else None, "heldout": heldout}
    finish_stage(ctx, trainer.model, curves=CURVES, title=f"{cfg.algo} from {cfg.model}", report=report,
                 adapter=cfg.method == "lora")
    log(f"saved {'LoRA adapter' if cfg.method == 'lora' else 'model'} + tokenizer to {out}")
    return out
