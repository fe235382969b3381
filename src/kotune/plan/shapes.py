"""What the planner knows of a model: its config (a local folder, or a hub id whose config ships with kotune) and
its parameter counts, counted on the meta device (no weights, no download, no table of sizes by hand)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

# Re-uploads of a shipped model's weights under another hub id (same config.json).
ALIASES = {"beomi/polyglot-ko-12.8b-safetensors": "EleutherAI/polyglot-ko-12.8b"}

SUPPORTED = ("gpt_neox", "llama")


def shipped_models() -> list[str]:
    """Hub ids whose config.json ships with kotune (models/configs/<org>--<name>/config.json)."""
    root = files("kotune.models").joinpath("configs")
    return sorted(p.name.replace("--", "/", 1) for p in root.iterdir() if p.joinpath("config.json").is_file())


def load_config_dict(name_or_path: str) -> dict:
    """config.json of a local model folder, else of a shipped hub id.

    Raises:
        ValueError: neither; the message lists the shipped ids and says how to plan a run folder not yet trained.
    """
    folder = Path(name_or_path).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    hub_id = ALIASES.get(name_or_path, name_or_path)
    shipped = files("kotune.models").joinpath("configs", hub_id.replace("/", "--"), "config.json")
    if shipped.is_file():
        return json.loads(shipped.read_text())
    raise ValueError(f"model: {name_or_path} is neither a model folder with a config.json nor a model whose config "
                     f"ships with kotune ({', '.join(shipped_models())}); a run folder not trained yet stands for "
                     f"its base model: add model=<base hub id or folder> to the command")


@dataclass
class ModelShape:
    """Sizes the memory accounting needs; parameter counts are of the causal LM built on the meta device."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    params: int  # whole causal LM
    embed: int  # input embedding
    head: int  # output projection (0 when tied to the input embedding)
    layer: int  # one decoder layer
    layer_linear: int  # weights + biases of a layer's linear layers (what QLoRA stores in NF4)
    largest: int  # the largest single parameter tensor (optimizer temporaries on CPU)
    linear_dims: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # leaf name -> (in, out) per module

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def lora_params(self, targets: list[str] | str, r: int) -> tuple[int, int, int]:
        """(trainable LoRA parameters, summed input width, number) of the modules `targets` adapts at rank r."""
        dims = [d for name, ds in self.linear_dims.items() if targets == "all-linear" or name in targets for d in ds]
        return sum(r * (i + o) for i, o in dims), sum(i for i, _ in dims), len(dims)


def model_shape(name_or_path: str) -> ModelShape:
    """Build the model on the meta device from its config and count what it holds."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = load_config_dict(name_or_path)
    if raw.get("model_type") not in SUPPORTED:
        raise ValueError(f"model: {name_or_path} is a {raw.get('model_type')!r} model; the planner knows "
                         f"{', '.join(SUPPORTED)} (the architectures of the seed models)")
    config = AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return shape_of(model, name_or_path)


def shape_of(model, name: str) -> ModelShape:
    """Counts of an already built causal LM (meta or real)."""
    import torch

    cfg = model.config
    layers = model.get_decoder().layers
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    layer = sum(p.numel() for p in layers[0].parameters())
    linear_dims: dict[str, list[tuple[int, int]]] = {}
    layer_linear = 0
    for index, block in enumerate(layers):
        for module_name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                leaf = module_name.rsplit(".", 1)[-1]
                linear_dims.setdefault(leaf, []).append((module.in_features, module.out_features))
                if index == 0:
                    layer_linear += sum(p.numel() for p in module.parameters())
    heads = cfg.num_attention_heads
    return ModelShape(
        name=name, model_type=cfg.model_type, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers, heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, intermediate=cfg.intermediate_size,
        vocab=cfg.vocab_size, params=sum(p.numel() for p in model.parameters()), embed=embed.numel(),
        head=0 if head is embed else head.numel(), layer=layer, layer_linear=layer_linear,
        largest=max(p.numel() for p in model.parameters()), linear_dims=linear_dims)
