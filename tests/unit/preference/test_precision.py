"""`precision: bf16`: every frozen model (DPO/PPO reference, reward model, a LoRA actor's base) is held in bf16,
every trained weight stays fp32, and PPO samples its rollouts under the autocast it trains with. bf16 runs on CPU,
so this is checked here; on a GPU the same code paths run with device cuda."""

import pytest
import torch

from kotune.config import load_config
from kotune.preference import ppo
from kotune.preference.config import DPOConfig
from kotune.preference.ppo import build_models

from .test_ppo import ppo_config

BF16, FP32 = torch.bfloat16, torch.float32


def dtypes(model, trainable: bool) -> set:
    return {p.dtype for p in model.parameters() if p.requires_grad == trainable}


def test_ppo_models_per_precision(toy_sft, toy_rm, toy_prompts, tmp_path):
    full = build_models(ppo_config(toy_sft, toy_rm, toy_prompts, tmp_path, "train.precision=bf16"), torch.device("cpu"))
    assert dtypes(full.actor, True) == {FP32} and dtypes(full.critic, True) == {FP32}  # trained: fp32 master weights
    assert {p.dtype for p in full.ref.parameters()} == {BF16} and not dtypes(full.ref, True)
    assert {p.dtype for p in full.reward.parameters()} == {BF16} and not dtypes(full.reward, True)

    lora = build_models(ppo_config(toy_sft, toy_rm, toy_prompts, tmp_path, "train.precision=bf16", "method=lora"),
                        torch.device("cpu"))
    assert lora.ref is None  # the reference is the actor's bf16 base with the adapter disabled
    assert dtypes(lora.actor, True) == {FP32} and dtypes(lora.actor, False) == {BF16}

    fp32 = build_models(ppo_config(toy_sft, toy_rm, toy_prompts, tmp_path, "train.precision=fp32"), torch.device("cpu"))
    assert all({p.dtype for p in m.parameters()} == {FP32} for m in (fp32.actor, fp32.ref, fp32.critic, fp32.reward))


def test_ppo_bf16_samples_under_the_training_autocast(toy_sft, toy_rm, toy_prompts, tmp_path, monkeypatch):
    seen = []
    sample = ppo.sample_replies

    def recording(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF16)
        return sample(*args, **kwargs)

    monkeypatch.setattr(ppo, "sample_replies", recording)
    out = ppo.run(ppo_config(toy_sft, toy_rm, toy_prompts, tmp_path / "bf16", "train.precision=bf16",
                             "train.max_steps=1"), log=lambda *_: None)
    assert seen == [True]
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_dpo_reference_is_bf16_and_trained_weights_fp32(sft_neox, toy_pairs, tmp_path, method):
    from kotune.preference import trl_backend as tb
    from kotune.preference.dpo import build_trainer
    from kotune.preference.models import load_policy, policy_dtype
    from kotune.preference.pairs import prepare_pairs

    cfg = load_config(DPOConfig, None, [
        f"model={sft_neox}", f"output_dir={tmp_path}", f"data.files=[{toy_pairs}]", "data.skip_invalid=true",
        "data.max_length=96", "data.eval_fraction=0", "train.global_batch_size=8", "train.micro_batch_size=8",
        "train.max_steps=1", "train.precision=bf16", f"method={method}", "lora.r=4"])
    ctx = tb.start_stage(cfg, "dpo", lambda *_: None)
    out, precision, tokenizer, log = ctx.out, ctx.precision, ctx.tokenizer, ctx.log
    data = prepare_pairs(cfg.data, tokenizer, cfg.train.seed, log)
    policy = load_policy(cfg.model, dtype=policy_dtype(method, precision))
    trainer = build_trainer(cfg, policy, tokenizer, data, out, precision, [])
    assert dtypes(trainer.model, True) == {FP32}
    if method == "full":
        assert {p.dtype for p in trainer.ref_model.parameters()} == {BF16}
    else:  # the reference is the policy's frozen bf16 base with the adapter disabled
        assert trainer.ref_model is None and dtypes(trainer.model, False) == {BF16}
    trainer.train()  # bf16 frozen weights beside fp32 trained ones train under CPU autocast
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))


@pytest.mark.parametrize("precision, expected", [("bf16", BF16), ("fp32", FP32)])
def test_grpo_reward_model_in_the_compute_dtype(toy_sft, toy_rm, toy_prompts, tmp_path, monkeypatch, precision,
                                                 expected):
    from kotune.preference import online

    held = []

    def stop(cfg, model, tokenizer, reward_fn, *args, **kwargs):
        held.append(reward_fn.model)
        raise KeyboardInterrupt  # only the models are under test here; training runs in test_ppo

    monkeypatch.setattr(online, "_trainer", stop)
    with pytest.raises(KeyboardInterrupt):
        ppo.run(ppo_config(toy_sft, toy_rm, toy_prompts, tmp_path, "algo=grpo", "ppo.num_generations=4",
                           f"train.precision={precision}"), log=lambda *_: None)
    assert {p.dtype for p in held[0].parameters()} == {expected}
