"""Which process reads the weights under FSDP2 low-RAM loading, and what the others build instead."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune.models.load import load_model


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
@pytest.mark.parametrize("rank, reads", [("0", True), ("1", False)])
def test_only_the_first_process_reads_the_weights(tiny_models, monkeypatch, arch, rank, reads):
    path = tiny_models[arch]
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    monkeypatch.setenv("RANK", rank)
    model = load_model(str(path))
    reference = AutoModelForCausalLM.from_pretrained(path)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    # The first process holds the checkpoint's weights; the others uninitialised storage of the same shapes (whose
    # contents are whatever the allocator hands out, so nothing is asserted about them).
    weights = dict(reference.named_parameters())
    if reads:
        assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    else:
        assert len({p.data_ptr() for p in model.parameters()}) == len(weights)  # accelerate maps parameters by this
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    # FSDP broadcasts only the state dict: buffers outside it (rotary frequencies) must already be right here.
    buffers = dict(reference.named_buffers())
    for name, buffer in model.named_buffers():
        assert buffer.device.type == "cpu" and torch.equal(buffer, buffers[name]), name


def test_without_low_ram_loading_every_process_reads(tiny_neox, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    monkeypatch.setenv("RANK", "1")
    assert {p.device.type for p in load_model(str(tiny_neox)).parameters()} == {"cpu"}
