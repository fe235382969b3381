"""Packed rows are exact with every attention kernel kotune picks, and `auto` packs only where packing is fast."""

import itertools
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune.data.collate import pack_batch
from kotune.training.attention import (
    SPARSE_PACKED, flex_trainable, packed_attention, packed_only_attention, plan_attention, use_attention,
)

# float64 round-off: unit roundoff 2^-53; a forward pass of a tiny model is a few hundred sums of at most 2^9 terms
# (Higham's pairwise bound: ~10 u per sum, relative to the sum of |terms|), so packed and alone agree to well under
# 2^-40 of the logits' scale. 2^-30 (~1e-9) keeps three orders of margin; a sequence attending to the one before it
# moves its logits by ~1e-2 of their scale (the control below checks that this test sees it).
EXACT = 2.0**-30

LENGTHS = [37, 5, 80, 1, 64]  # a 1-token sequence and unequal lengths: block edges fall inside sequences


def _sequences(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(5, vocab, (n,), generator=g).tolist() for n in LENGTHS]


def _logits(model, sequences, attention: str, positions=None):
    """Logits of the packed row, and of each sequence run alone; flex_attention runs uncompiled (torch's eager
    reference of the same block mask: compiling it on CPU takes ~40 s, and on CPU it serves no training)."""
    packed = pack_batch([(s, s) for s in sequences])
    eager = torch.compiler.set_stance("force_eager") if attention == "flex_attention" else torch.no_grad()
    with torch.no_grad(), eager:
        row = model(input_ids=packed["input_ids"], position_ids=positions if positions is not None else packed["position_ids"],
                    use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([s]), use_cache=False).logits[0] for s in sequences]
    return row, alone


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
# The kernels kotune picks for packed rows that run here (flash-attention needs CUDA). Not eager: its softmax runs in
# float32 even in a float64 model, so it agrees only to float32 round-off.
@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
def test_packed_row_equals_each_sequence_alone(tiny_models, arch, attention):
    # Loaded with transformers' default and switched, as the training stages do.
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float64).eval()
    use_attention(model, attention)
    assert model.config._attn_implementation == attention
    sequences = _sequences(model.config.vocab_size)
    row, alone = _logits(model, sequences, attention)
    scale = max(a.abs().max().item() for a in alone)
    start = 0
    for seq, logits in zip(sequences, alone):
        assert (row[start : start + len(seq)] - logits).abs().max().item() <= EXACT * scale, (attention, len(seq))
        start += len(seq)
    # The loss kotune trains on: the packed row's summed cross-entropy equals the sum over the sequences alone.
    packed = pack_batch([(s, s) for s in sequences])
    targets = packed["labels"][0, 1:]
    keep = targets != -100
    packed_loss = torch.nn.functional.cross_entropy(row[:-1][keep], targets[keep], reduction="sum")
    alone_loss = sum(torch.nn.functional.cross_entropy(a[:-1], torch.tensor(s[1:], dtype=torch.long), reduction="sum")
                     for s, a in zip(sequences, alone))
    assert abs(packed_loss.item() - alone_loss.item()) <= EXACT * abs(alone_loss.item())


@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
def test_pretraining_blocks_of_several_rows_are_exact(tiny_neox, attention):
    """Pre-training's batches: several rows of one width, each holding documents whose positions restart."""
    model = AutoModelForCausalLM.from_pretrained(tiny_neox, dtype=torch.float64).eval()
    use_attention(model, attention)
    g = torch.Generator().manual_seed(1)
    rows = [[37, 5, 80], [1, 64, 57]]  # 122 tokens each
    docs = [[torch.randint(5, model.config.vocab_size, (n,), generator=g).tolist() for n in row] for row in rows]
    input_ids = torch.tensor([sum(row, []) for row in docs])
    position_ids = torch.tensor([[p for doc in row for p in range(len(doc))] for row in docs])
    eager = torch.compiler.set_stance("force_eager") if attention == "flex_attention" else torch.no_grad()
    with torch.no_grad(), eager:
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        for r, row in enumerate(docs):
            start = 0
            for doc in row:
                alone = model(input_ids=torch.tensor([doc]), use_cache=False).logits[0]
                assert (logits[r, start : start + len(doc)] - alone).abs().max().item() <= EXACT * alone.abs().max().item()
                start += len(doc)


def test_the_exactness_check_sees_sequences_that_attend_to_each_other(tiny_llama):
    """Control: positions that never restart make one long sequence; the comparison above must then fail."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa", dtype=torch.float64).eval()
    sequences = _sequences(model.config.vocab_size)
    row, alone = _logits(model, sequences, "sdpa", positions=torch.arange(sum(LENGTHS))[None])
    scale = max(a.abs().max().item() for a in alone)
    second = row[LENGTHS[0] : LENGTHS[0] + LENGTHS[1]] - alone[1]
    assert second.abs().max().item() > 1e3 * EXACT * scale


# --------------------------------------------------------------------------------------------- the choice

DEVICES = ("cpu", "cuda", "mps")
ATTENTIONS = (None, "sdpa", "eager", "flex_attention", "flash_attention_2")


def _cases():
    for batching, attention, device, flash in itertools.product(("auto", "padded", "padding_free"), ATTENTIONS, DEVICES, (False, True)):
        trains = attention not in ("flex_attention", "flash_attention_2") or device == "cuda"
        yield batching, attention, device, flash, trains


@pytest.mark.parametrize(("batching", "attention", "device", "flash", "trains"), list(_cases()))
def test_batching_and_attention_choice(batching, attention, device, flash, trains):
    if not trains:  # a kernel with no backward on this device stops the run before anything loads
        with pytest.raises(ValueError, match=f"train.attn_implementation={attention}: it has no backward pass on {device}"):
            plan_attention(batching, attention, device, flash_attn=flash)
        return
    chosen, kernel = plan_attention(batching, attention, device, flash_attn=flash)
    if attention is not None:
        assert kernel == attention  # what the user set is what loads
    if batching != "auto":
        assert chosen == batching
    if chosen == "padding_free":
        assert kernel == (attention or packed_attention(device, flash))
    if batching == "auto":
        # Packing only with a kernel that skips the blocks between sequences; a dense packed mask (sdpa, eager) is
        # slower than length-sorted padding (1.9x on CPU, benchmarks/sft_throughput.py).
        assert (chosen == "padding_free") == (kernel in SPARSE_PACKED)
    if device == "cpu" and batching == "auto":
        assert chosen == "padded"  # no kernel trains packed rows sparsely on CPU (flex_attention has no backward)


@pytest.mark.parametrize(("device", "flash", "expected"), [
    ("cuda", True, "flash_attention_2"), ("cuda", False, "flex_attention"), ("cpu", True, "sdpa"), ("cpu", False, "sdpa"),
    ("mps", False, "sdpa"),
])
def test_padding_free_and_pretraining_get_the_fastest_exact_kernel(device, flash, expected):
    assert plan_attention("padding_free", None, device, flash_attn=flash) == ("padding_free", expected)
    assert plan_attention("auto", None, device, flash_attn=flash) == (
        ("padding_free", expected) if expected in SPARSE_PACKED else ("padded", None))
    assert packed_only_attention(None, device, flash_attn=flash) == (None if expected == "sdpa" else expected)
    assert packed_only_attention("eager", device, flash_attn=flash) == "eager"


def test_flex_only_for_models_that_take_it(tiny_llama):
    from kotune.models.lora import apply_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert flex_trainable(model) and flex_trainable(apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None))
    model.config.attention_dropout = 0.1  # transformers' flex_attention refuses attention dropout
    assert not flex_trainable(model)
    assert plan_attention("auto", None, "cuda", flash_attn=False, flex_ok=False) == ("padded", None)
    assert plan_attention("padding_free", None, "cuda", flash_attn=False, flex_ok=False) == ("padding_free", "sdpa")


# --------------------------------------------------------------------------------------------- in a run


def test_sft_on_cpu_packs_only_when_asked_and_trains_the_same_loss(tiny_neox, tmp_path):
    from kotune_test_paths import SAMPLES
    from kotune.common.metrics import read_metrics
    from kotune.config import load_config
    from kotune.sft.config import SFTConfig
    from kotune.sft.train import run

    def sft(name, *overrides):
        cfg = load_config(SFTConfig, None, [
            f"model={tiny_neox}", f"output_dir={tmp_path / name}", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
            "data.template=koalpaca", "data.max_length=256", "train.global_batch_size=8", "train.micro_batch_size=4",
            "train.max_steps=1", "train.precision=fp32", "data.eval_fraction=0.02", *overrides])
        out = run(cfg, log=lambda *_: None)
        return json.loads((out / "data_report.json").read_text()), next(r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r)

    auto_report, auto_loss = sft("auto")
    packed_report, packed_loss = sft("packed", "train.batching=padding_free")
    assert (auto_report["batching"], auto_report["attention"]) == ("padded", "sdpa")
    assert (packed_report["batching"], packed_report["attention"]) == ("padding_free", "sdpa")
    # Same weights, same examples in step 1: the mean loss differs only by fp32 round-off of the kernels (per-token
    # logits agree to ~1e-6 relative in fp32); a leak between packed sequences changes it by percents.
    assert abs(auto_loss - packed_loss) <= 1e-4 * auto_loss
