"""`kotune dpo`: offline preference optimisation from the SFT model with TRL: DPO (any of its loss types), KTO,
ORPO or SimPO.

The reference is the SFT model itself. With `method: full` it is a frozen copy made here (TRL would otherwise
reload it from `config._name_or_path`, which for a merged SFT adapter is the raw base model). With `method: lora`
TRL computes it by disabling the adapter, which is exact because an SFT adapter is merged before the new one is
added (`kotune.preference.models`). ORPO and SimPO use no reference.
"""

from __future__ import annotations

from pathlib import Path

from kotune.preference import trl_backend as tb
from kotune.preference.config import DPOConfig
from kotune.preference.heldout import compare, preference_values, summary_line
from kotune.preference.models import check_lora_start, frozen_copy, load_policy, policy_dtype
from kotune.preference.pairs import prepare_pairs
from kotune.training.stage import finish_stage
from kotune.training.tracking import trl_config_callbacks

CURVES = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "grad_norm"]


def _peft_config(cfg: DPOConfig, model):
    if cfg.method != "lora":
        return None
    from peft import LoraConfig

    from kotune.models.lora import target_modules_for

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                      target_modules=target_modules_for(model.config.model_type, cfg.lora.target_modules))


def build_trainer(cfg: DPOConfig, model, tokenizer, data, out: Path, precision: str, callbacks: list):
    """The TRL trainer for `cfg.algo`, fed kotune's token ids."""
    peft_config = _peft_config(cfg, model)
    # A frozen copy of the SFT model as the reference for full fine-tuning, in the compute dtype; LoRA: TRL
    # disables the adapter.
    ref = None
    if cfg.algo in ("dpo", "kto") and cfg.method == "full":
        ref = frozen_copy(model, precision)
    common = dict(processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    if cfg.algo == "dpo":
        from trl import DPOConfig as Args

        loss_type, loss_weights = [cfg.loss_type], None  # TRL's default: every listed loss weighs 1
        if cfg.sft_weight:
            loss_type, loss_weights = [cfg.loss_type, "sft"], [1.0, cfg.sft_weight]
        args = tb.training_args(Args, cfg.train, out / "trainer", precision, beta=cfg.beta, max_length=None,
                                loss_type=loss_type, loss_weights=loss_weights)
        return tb.pretokenized_dpo()(model=model, ref_model=ref, args=args, train_dataset=tb.pair_dataset(data.train),
                                     eval_dataset=tb.pair_dataset(data.eval) if data.eval else None, **common)
    if cfg.algo == "kto":
        from trl import KTOConfig as Args

        args = tb.training_args(Args, cfg.train, out / "trainer", precision, beta=cfg.beta, max_length=None)
        return tb.pretokenized_kto()(model=model, ref_model=ref, args=args, train_dataset=tb.unpaired_dataset(data.train),
                                     eval_dataset=tb.unpaired_dataset(data.eval) if data.eval else None, **common)
    if cfg.algo == "orpo":
        from trl.experimental.orpo import ORPOConfig as Args
        from trl.experimental.orpo import ORPOTrainer as Trainer

        extra = {"beta": cfg.beta}
    else:  # simpo: CPO with the SimPO loss and no NLL term (TRL's documented SimPO set-up)
        from trl.experimental.cpo import CPOConfig as Args
        from trl.experimental.cpo import CPOTrainer as Trainer

        extra = {"beta": cfg.beta, "loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": cfg.simpo_gamma}
    args = tb.training_args(Args, cfg.train, out / "trainer", precision, **extra)
    return tb.pretokenized_legacy(Trainer)(model=model, args=args, train_dataset=tb.legacy_pair_dataset(data.train),
                                           eval_dataset=tb.legacy_pair_dataset(data.eval) if data.eval else None, **common)


def run(cfg: DPOConfig, log=print) -> Path:
    """Train and save; returns the output folder.

    Outputs: the model (method full) or LoRA adapter (method lora) with the tokenizer and its chat_template,
    dpo_report.json (pair counts, skipped pairs per reason, first/last logged metrics, held-out figures before
    and after with intervals, `kotune.preference.heldout`; TRL's own eval_ metrics as trl_heldout),
    metrics.jsonl, curves.png and config.yaml.
    """
    check_lora_start(cfg.model, cfg.method)
    ctx = tb.start_stage(cfg, "dpo", log)
    out, precision, tokenizer, log = ctx.out, ctx.precision, ctx.tokenizer, ctx.log
    data = prepare_pairs(cfg.data, tokenizer, cfg.train.seed, log)
    model = load_policy(cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=policy_dtype(cfg.method, precision))
    pad_id = tokenizer.pad_token_id
    # Before training the policy is the SFT model, which is also DPO's and KTO's reference: its held-out figures
    # are the reference's own, the ones training has to beat. Measured on the first process only.
    before = preference_values(model.to(ctx.device), data.eval, pad_id) if data.eval and ctx.is_main else None
    metrics = tb.metrics_callback(out)
    trainer = build_trainer(cfg, model, tokenizer, data, out, precision, [metrics, *trl_config_callbacks(cfg, out)])
    log(f"training {cfg.algo}{f' ({cfg.loss_type})' if cfg.algo == 'dpo' else ''}: {len(data.train):,} pairs, "
        f"method {cfg.method}, {precision}")
    tb.announce_processes(trainer, cfg.algo)
    trainer.train()
    trl_heldout = trainer.evaluate() if data.eval else None  # TRL's own metrics on the held-out pairs, prefixed eval_
    if not ctx.is_main:
        return out
    heldout = None
    if before is not None:
        role = "the reference" if cfg.algo in ("dpo", "kto") else "the starting point"
        heldout = compare(before, preference_values(trainer.model, data.eval, pad_id),
                          before_is=f"{cfg.model} ({role})", seed=cfg.train.seed)
    rows = [r for r in metrics.rows if "loss" in r]  # training rows; trainer.evaluate() logged an eval_* row last
    report = {"algo": cfg.algo, "loss_type": cfg.loss_type, "template": ctx.template, "data": data.report,
              "first_log": rows[0] if rows else None, "last_log": rows[-1] if rows else None, "heldout": heldout,
              "trl_heldout": trl_heldout}
    finish_stage(ctx, trainer.model, curves=CURVES, title=f"{cfg.algo} from {cfg.model}", report=report,
                 adapter=cfg.method == "lora")
    if rows and "rewards/margins" in rows[-1]:
        log(f"chosen-rejected margin: {rows[0]['rewards/margins']:.4f} at step {rows[0]['step']} -> "
            f"{rows[-1]['rewards/margins']:.4f} at step {rows[-1]['step']}")
    log(summary_line(heldout) if heldout else "no held-out pairs (data.eval_fraction 0, no data.eval_files): "
        "nothing measured on pairs the model did not train on")
    log(f"saved {'LoRA adapter' if cfg.method == 'lora' else 'model'} + tokenizer to {out}")
    return out
