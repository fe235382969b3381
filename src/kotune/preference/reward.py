"""`kotune reward`: a reward model from the SFT model, trained on preference pairs with TRL's RewardTrainer.

The model is `AutoModelForSequenceClassification(num_labels=1)` on the SFT weights: the standard form that
transformers, TRL and our PPO all load with the head included. After training, the backbone and the head are
saved together, a reload is scored against the in-memory model on a held-out probe batch (an error if they
differ: chatKoAlpaca's reward head was never saved), and the probe's scores are saved with the model so PPO can
check the reward model it uses.
"""

from __future__ import annotations

from pathlib import Path

from kotune.preference.config import RewardConfig
from kotune.preference.heldout import compare, reward_values, summary_line
from kotune.preference.models import head_names, load_scalar_model
from kotune.preference.pairs import prepare_pairs
from kotune.preference.scoring import (
    PROBE_FILE,
    RewardModelError,
    load_reward_model,
    score_sequences,
    write_probe,
)
from kotune.preference.trl_backend import (
    announce_processes,
    metrics_callback,
    reward_dataset,
    start_stage,
    training_args,
)
from kotune.training.stage import finish_stage
from kotune.training.tracking import trl_config_callbacks

CURVES = ["loss", "accuracy", "margin", "mean_reward", "grad_norm", "lr"]


def _lora_config(cfg: RewardConfig, model):
    from peft import LoraConfig

    from kotune.models.lora import target_modules_for

    return LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="SEQ_CLS",
        target_modules=target_modules_for(model.config.model_type, cfg.lora.target_modules),
        modules_to_save=["score"],  # the head is new: it must be trained in full and saved
    )


def _probe_sequences(pairs, size: int) -> list[list[int]]:
    seqs = []
    for p in pairs:
        seqs += [p.chosen_sequence, p.rejected_sequence]
    return seqs[:size]


def run(cfg: RewardConfig, log=print) -> Path:
    """Train, evaluate on held-out pairs, save, and verify the saved reward model; returns the output folder.

    Outputs: model.safetensors + config.json (backbone and head), tokenizer with the SFT chat_template,
    reward_probe.json, reward_report.json (pair counts, skipped pairs per reason, held-out accuracy and margin before and
    after with intervals), metrics.jsonl, curves.png and config.yaml.
    """
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    ctx = start_stage(cfg, "reward", log)  # seeds the new head's initialisation
    out, precision, tokenizer, log, device = ctx.out, ctx.precision, ctx.tokenizer, ctx.log, ctx.device
    data = prepare_pairs(cfg.data, tokenizer, cfg.train.seed, log)
    model, missing = load_scalar_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    log(f"reward head: new ({', '.join(missing)})" if missing else "reward head: continuing from the checkpoint's head")
    model.config.pad_token_id = tokenizer.pad_token_id
    probe_pairs = data.eval or data.train
    before = reward_values(model.to(device), data.eval, tokenizer.pad_token_id) if data.eval else None

    args = training_args(TRLRewardConfig, cfg.train, out / "trainer", precision, max_length=None,
                         center_rewards_coefficient=cfg.center_rewards_coefficient, disable_dropout=True)
    metrics = metrics_callback(out)
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=reward_dataset(data.train), processing_class=tokenizer,
        callbacks=[metrics, *trl_config_callbacks(cfg, out)], peft_config=_lora_config(cfg, model) if cfg.method == "lora" else None,
    )
    log(f"training reward model: {len(data.train):,} pairs, method {cfg.method}, {precision}")
    announce_processes(trainer, "reward")
    trainer.train()
    if not ctx.is_main:
        return out
    model = trainer.model
    if cfg.method == "lora":
        model = model.merge_and_unload()  # one plain model: backbone and head load together, no PEFT needed
    model = model.float().eval()
    heldout = None
    if before is not None:
        heldout = compare(before, reward_values(model, data.eval, tokenizer.pad_token_id),
                          before_is=f"{cfg.model} with its new head", seed=cfg.train.seed)
    probe = _probe_sequences(probe_pairs, cfg.probe_size)
    probe_scores = score_sequences(model, probe, tokenizer.pad_token_id)

    def check_saved() -> dict:
        write_probe(out / PROBE_FILE, probe, probe_scores)
        return {"reload_max_score_diff": _verify_saved(out, probe, probe_scores, cfg.trust_remote_code, device)}

    report = {"template": ctx.template, "data": data.report, "head": head_names(model), "heldout": heldout,
              "train_log": metrics.rows[-1] if metrics.rows else None}
    finish_stage(ctx, model, curves=CURVES, title=f"reward model from {cfg.model}", report=report, after_save=check_saved)
    if heldout:
        log(summary_line(heldout))
    log(f"saved reward model (backbone + head) to {out}; reload scores match")
    return out


def _verify_saved(out: Path, probe: list[list[int]], expected, trust_remote_code: bool, device) -> float:
    """Load the saved folder alone and score the probe: the trained head must have been saved with the backbone."""
    reloaded = load_reward_model(str(out), trust_remote_code=trust_remote_code, device=device)
    got = score_sequences(reloaded, probe, reloaded.config.pad_token_id)
    diff = float((got - expected).abs().max())
    if diff > 1e-5 * max(1.0, float(expected.abs().max())):
        raise RewardModelError(f"the reward model saved to {out} scores the probe differently after reloading (max "
                               f"difference {diff:.4g}); the saved weights are not the trained ones")
    return diff
