"""SFT on tiny models: loss falls, LoRA merges exactly, bad data and untrainable setups stop with a reason."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kotune_test_paths import SAMPLES
from kotune.common.metrics import read_metrics
from kotune.config import load_config
from kotune.data.schema import DataError
from kotune.sft.config import SFTConfig
from kotune.sft.train import run


@pytest.fixture(scope="module")
def small_alpaca(tmp_path_factory):
    records = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:64]
    path = tmp_path_factory.mktemp("data") / "alpaca64.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return str(path)


def sft_config(model, data, out, *overrides):
    return load_config(SFTConfig, None, [
        f"model={model}", f"output_dir={out}", f"data.files=[{data}]", "data.template=koalpaca", "data.max_length=256",
        "train.global_batch_size=8", "train.micro_batch_size=4", "train.warmup_ratio=0", "train.lr_scheduler=constant",
        *overrides,
    ])


def test_full_finetuning_loss_falls_and_outputs_reload(tiny_neox, small_alpaca, tmp_path):
    logged = []
    out = run(sft_config(tiny_neox, small_alpaca, tmp_path / "sft", "train.max_steps=24", "train.learning_rate=3e-3",
                         "train.eval_every=12"), log=logged.append)
    rows = read_metrics(out / "metrics.jsonl")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 24 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    for name in ("model.safetensors", "config.yaml", "data_report.json", "loss.png", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "### Instruction(명령어)" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_neox)
    assert not torch.equal(model.gpt_neox.embed_in.weight, base.gpt_neox.embed_in.weight)
    report = json.loads((out / "data_report.json").read_text())
    stats = report["stats"]
    held = report["held_out"]
    assert held["examples"] == 6 and held["from"] == "eval_fraction"  # 10% of 64 distinct prompts
    assert stats["examples"] == 58 and stats["truncated"] > 0  # max_length=256 cuts some long replies
    assert stats["with_eos"] == stats["examples"] - stats["truncated"]  # every complete reply learns to stop
    # Held-out loss: before the first step, every eval_every steps, after the last; the report pairs first and last.
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 12, 24] and all(r["eval_tokens"] == held["trained_tokens"] for r in evals)
    result = json.loads((out / "sft_report.json").read_text())["held_out"]
    assert result["before"]["loss"]["value"] == pytest.approx(evals[0]["eval_loss"], rel=1e-12)
    assert result["after"]["loss"]["value"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-12)
    change = result["change"]
    assert change["changed"] and change["high"] < 0  # 24 steps at 3e-3 lower held-out reply loss of a random model
    assert change["value"] == pytest.approx(result["after"]["loss"]["value"] - result["before"]["loss"]["value"], abs=1e-9)
    assert any(line.startswith("held-out loss on 6 example(s)") and "lowered it measurably" in line for line in logged)
    before = [json.loads(line) for line in (out / "held_out_before.jsonl").read_text().splitlines()]
    assert len(before) == 6 and sum(r["tokens"] for r in before) == held["trained_tokens"]


def test_lora_adapter_merges_to_the_same_logits(tiny_llama, small_alpaca, tmp_path):
    from peft import PeftModel

    from kotune.models.lora import merge_adapter

    out = run(sft_config(tiny_llama, small_alpaca, tmp_path / "lora", "method=lora", "lora.r=4", "train.max_steps=6",
                         "train.learning_rate=1e-2", "data.template=ko_chat"), log=lambda *_: None)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    merged_dir = merge_adapter(str(out), str(tmp_path / "merged"))
    ids = torch.tensor([AutoTokenizer.from_pretrained(out)("### 사용자:\n안녕하세요\n\n### 어시스턴트:\n")["input_ids"]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(ids).logits
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapter learned something
    assert (adapted - merged).abs().max().item() <= 1e-5
    assert AutoTokenizer.from_pretrained(merged_dir).chat_template == AutoTokenizer.from_pretrained(out).chat_template


def test_lora_holds_its_frozen_base_in_the_compute_precision(tiny_llama, small_alpaca, tmp_path):
    """bf16 training: LoRA's frozen base in bf16 (half the memory), adapters in fp32; full fine-tuning keeps fp32."""
    from kotune.sft.train import build_model

    lora = build_model(sft_config(tiny_llama, small_alpaca, tmp_path, "method=lora"), "bf16")
    dtypes = {p.requires_grad: p.dtype for p in lora.parameters()}
    assert dtypes == {False: torch.bfloat16, True: torch.float32}
    full = build_model(sft_config(tiny_llama, small_alpaca, tmp_path), "bf16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}


def test_qlora_trains_adapters_on_a_4bit_base(tiny_llama, small_alpaca, tmp_path):
    """method=qlora: the frozen base is NF4 (bitsandbytes), only LoRA weights train, and the saved adapter loads on
    the full-precision base like any PEFT adapter (the way QLoRA models are served)."""
    import bitsandbytes as bnb
    from peft import PeftModel

    from kotune.sft.train import build_model

    cfg = sft_config(tiny_llama, small_alpaca, tmp_path / "qlora", "method=qlora", "lora.r=4", "train.max_steps=6",
                     "train.learning_rate=1e-2", "data.template=ko_chat")
    model = build_model(cfg, "fp32")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert {n for n, p in model.named_parameters() if p.requires_grad} and all(
        "lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    out = run(cfg, log=lambda *_: None)
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(ids).logits
    assert torch.isfinite(adapted).all() and not torch.allclose(adapted, base, atol=1e-4)


def test_refuses_to_train_when_no_reply_fits(tiny_neox, small_alpaca, tmp_path):
    # The bilingual KoAlpaca preamble alone is longer than 16 tokens, so nothing would be trained.
    with pytest.raises(ValueError, match="no trained token in any example"):
        run(sft_config(tiny_neox, small_alpaca, tmp_path / "x", "data.max_length=16"), log=lambda *_: None)


def test_bad_records_stop_training_or_are_listed(tiny_neox, tmp_path):
    data = tmp_path / "mixed.jsonl"
    good = {"instruction": "인사해 주세요", "input": "", "output": "안녕하세요"}
    rows = [good, {"instruction": "빈 답", "input": "", "output": " "}, good, {"instruction": 1, "output": "x"}] * 2
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{data}:2: output: empty or whitespace only"):
        run(sft_config(tiny_neox, data, tmp_path / "a", "train.max_steps=1"), log=lambda *_: None)
    logged = []
    out = run(sft_config(tiny_neox, data, tmp_path / "b", "train.max_steps=1", "data.skip_invalid=true"), log=logged.append)
    skipped = [line for line in logged if line.startswith("skipped ")]
    assert f"skipped {data}:2: output: empty or whitespace only" in skipped
    assert f"skipped {data}:8: instruction: expected a string, got int" in skipped
    assert any("skipped 4 invalid record(s)" in line for line in skipped)
    assert len(json.loads((out / "data_report.json").read_text())["skipped_records"]) == 4


def test_many_skipped_examples_are_summed_up_on_screen_and_all_listed_in_the_report(tiny_neox, tmp_path):
    from kotune.data.templates import install_template
    from kotune.models.load import load_tokenizer
    from kotune.sft.train import SHOWN_PER_KIND, prepare_examples

    cfg = sft_config(tiny_neox, str(SAMPLES / "koalpaca_v1.0.sample.json"), tmp_path, "data.max_length=256")
    tokenizer = load_tokenizer(str(tiny_neox))
    install_template(tokenizer, "koalpaca")
    logged = []
    examples, held, report = prepare_examples(cfg, tokenizer, logged.append)
    skipped = report["skipped_without_trained_tokens"]
    held_skipped = report["held_out"]["skipped_without_trained_tokens"]
    assert len(skipped) > SHOWN_PER_KIND
    assert len(examples) + len(skipped) + len(held) + len(held_skipped) == 2000  # nothing lost
    per_line = [line for line in logged if line.endswith("no trained token left after truncation to max_length=256")]
    assert len(per_line) == SHOWN_PER_KIND
    summary = [line for line in logged if line.startswith(f"skipped {len(skipped):,} example(s)")]
    assert len(summary) == 1 and "all in data_report.json" in summary[0]


def test_a_used_output_dir_is_refused_and_resume_continues_only_its_own_run(tiny_neox, small_alpaca, tmp_path):
    """Issue 22's sequence: a run leaves checkpoints; a fresh run into the folder refuses; --overwrite clears them;
    a resume with other settings is refused; one whose checkpoint is past its last step is refused."""
    from kotune.common.run_folder import RunFolderError

    out = tmp_path / "sft"
    quiet = dict(log=lambda *_: None)
    run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=4", "train.save_every=3"), **quiet)
    assert (out / "checkpoints" / "step-0000003").is_dir()
    with pytest.raises(RunFolderError, match="already holds another run's checkpoints"):
        run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=2"), **quiet)
    with pytest.raises(RunFolderError, match=r"train\.global_batch_size: 8 \(checkpoint\) vs 4 \(now\)"):
        run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=6", "train.resume=true",
                       "train.global_batch_size=4"), **quiet)
    with pytest.raises(RunFolderError, match="at step 3, and this run has 2 step"):
        run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=2", "train.resume=true"), **quiet)
    lines: list[str] = []
    run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=5", "train.resume=true"), log=lines.append)
    assert any("resuming from" in line and "(step 3)" in line for line in lines)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 5]  # the first run's step 0 kept, its step 4 dropped
    before = json.loads((out / "sft_report.json").read_text())["held_out"]["before"]
    assert before["loss"]["value"] == pytest.approx(rows[0]["eval_loss"], rel=1e-12)  # step 0, read back on resume
    run(sft_config(tiny_neox, small_alpaca, out, "train.max_steps=2", "overwrite=true"), **quiet)
    assert not (out / "checkpoints").exists()  # the earlier run's checkpoints are gone with it
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2]
