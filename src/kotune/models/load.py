"""Load a causal LM and its tokenizer from a hub id or a local path, with safe defaults.

safetensors only unless asked, `trust_remote_code` off unless the recipe asks, and a LoRA adapter folder
loads as base model + adapter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from kotune.common.run_folder import model_fingerprint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_exists(name_or_path: str, what: str = "model") -> None:
    """A value that is clearly a local path must exist: otherwise transformers would try it as a hub id and
    answer with a confusing repo-id error."""
    # "org/name" may be a hub id; it is taken as a local path when its first part is a local folder (runs/x).
    first = Path(name_or_path.split("/")[0]).expanduser()
    looks_local = _looks_local(name_or_path) or ("/" in name_or_path and first.is_dir())
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(f"{what}: folder {name_or_path} does not exist")


def resolve_model_path(name_or_path: str) -> str:
    """A `kotune pipeline` run folder stands for its final model (recorded in its pipeline.json)."""
    manifest = Path(name_or_path) / "pipeline.json"
    return (json.loads(manifest.read_text()).get("final_model") if manifest.is_file() else None) or name_or_path


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


BASE_RECORD = "base_model.json"  # beside adapter_config.json: the base's absolute path and content fingerprint


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def adapter_base(path: str, override: str | None = None) -> str:
    """The base model an adapter folder loads on: `override`, else the one recorded in its adapter_config.json.

    A recorded local folder that no longer exists is an error naming the adapter, before any hub request (a
    relative path from an older kotune is also looked up beside the adapter's parent folders). A base whose
    content fingerprint differs from the recorded one is loaded with a warning: the adapter was trained on other
    weights.

    Raises:
        FileNotFoundError: the base folder is missing.
    """
    config = Path(path) / "adapter_config.json"
    recorded = json.loads(config.read_text())["base_model_name_or_path"]
    record_path = Path(path) / BASE_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if override is not None:
        if not Path(override).expanduser().is_dir():
            raise FileNotFoundError(f"--base: folder {override} does not exist")
        base = override
    else:
        base = recorded
        if not Path(base).expanduser().exists() and not Path(base).is_absolute():
            # Relative to the folder it was trained from; try the adapter's parents before calling it a hub id.
            near = [parent / base for parent in Path(path).resolve().parents if (parent / base).is_dir()]
            base = str(near[0]) if near else base
        local = Path(base).is_absolute() or _looks_local(base) or record.get("local")
        if local and not Path(base).expanduser().exists():
            raise FileNotFoundError(f"base model folder {recorded} (recorded in {config}) does not exist; move it "
                                    f"back, or give the base's new place (kotune lora merge {path} --base DIR)")
    expected = record.get("fingerprint")
    if expected and Path(base).is_dir() and model_fingerprint(base) != expected:
        print(f"warning: base model {base} differs from the one adapter {path} was trained on (config.json or weight "
              "files changed since); its outputs will not be the trained model's", file=sys.stderr)
    return base


def pin_adapter_base(adapter_dir: str | Path) -> None:
    """After saving an adapter: record its base as an absolute path when it is a local folder (PEFT stores the name
    as given, so `runs/sft` breaks from any other working directory), with a content fingerprint beside it."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_path.read_text())
    base = Path(config["base_model_name_or_path"]).expanduser()
    local = base.is_dir()
    if local:
        config["base_model_name_or_path"] = str(base.resolve())
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (Path(adapter_dir) / BASE_RECORD).write_text(json.dumps({
        "base_model": config["base_model_name_or_path"], "local": local,
        "fingerprint": model_fingerprint(base) if local else None}, indent=1))


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, key: str = "model"):
    """The tokenizer of `name_or_path` (a LoRA adapter folder carries its own, saved at training).

    Args:
        key: the recipe key or argument that named the path, for error messages (`model` or `tokenizer`).
    """
    from transformers import AutoTokenizer

    name_or_path = resolve_model_path(name_or_path)
    check_exists(name_or_path, key)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        unfinished = " (it holds a run.json: the run writing it has not finished)" if (folder / "run.json").exists() else ""
        raise FileNotFoundError(f"{key}: folder {name_or_path} holds no tokenizer ({' / '.join(_TOKENIZER_FILES[:2])})"
                                f"{unfinished}")
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Padding positions are masked by attention_mask and labels, so reusing EOS here is safe.
        tok.pad_token = tok.eos_token
    return tok


def stage_tokenizer(cfg):
    """The tokenizer a stage's config names: `cfg.tokenizer`, else the model's; errors name the key that was set."""
    return load_tokenizer(cfg.tokenizer or cfg.model, trust_remote_code=cfg.trust_remote_code,
                          key="tokenizer" if cfg.tokenizer else "model")


def load_model(name_or_path: str, *, dtype: str = "fp32", trust_remote_code: bool = False,
               attn_implementation: str | None = None, device: str | torch.device | None = None,
               load_in_4bit: bool = False, base: str | None = None):
    """A causal LM; a LoRA adapter folder is loaded on top of the base it names.

    Args:
        name_or_path: hub id, model folder, or adapter folder.
        dtype: fp32 | bf16 | fp16; with `load_in_4bit`, the dtype the 4-bit layers compute in.
        attn_implementation: e.g. "sdpa", "flash_attention_2"; None lets transformers choose.
        load_in_4bit: QLoRA's frozen base: linear layers stored as 4-bit NF4 with double quantization
            (bitsandbytes), placed on `device` (a quantized model cannot be moved afterwards).
        base: for an adapter folder, the base model to load it on instead of the one it records.
    """
    from transformers import AutoModelForCausalLM

    name_or_path = resolve_model_path(name_or_path)
    check_exists(name_or_path)
    adapter = is_adapter(name_or_path)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not adapter and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model: folder {name_or_path} holds no model (no config.json or adapter_config.json)")
    base = adapter_base(name_or_path, base) if adapter else name_or_path
    if not adapter and not load_in_4bit and receives_weights_by_broadcast():
        return _empty_model(base, DTYPES[dtype], trust_remote_code, attn_implementation)
    quantized = {}
    if load_in_4bit:
        quantized = {"quantization_config": _nf4_config(DTYPES[dtype]), "device_map": {"": str(device or "cpu")}}
        device = None
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
        use_safetensors=None if trust_remote_code else _prefers_safetensors(base), **quantized)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, name_or_path)
    if device is not None:
        model.to(device)
    return model


def _nf4_config(compute_dtype):
    """QLoRA's settings (Dettmers et al. 2023): NF4 weights, double-quantized constants."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("method: qlora needs bitsandbytes: pip install bitsandbytes (or kotune[qlora])")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def _prefers_safetensors(base: str) -> bool | None:
    """True for a local folder with safetensors weights (never unpickle a .bin beside them); hub ids are left to
    transformers, which already prefers safetensors."""
    return Path(base).is_dir() and any(Path(base).glob("*.safetensors")) or None


def receives_weights_by_broadcast() -> bool:
    """FSDP2 with `fsdp_cpu_ram_efficient_loading: true`, on any process but the first: that process alone reads the
    checkpoint, and accelerate's `prepare` moves the model to the meta device, shards it and broadcasts the first process's
    weights into every shard (`fsdp2_load_full_state_dict`). transformers 5.24's `from_pretrained` still reads the
    full weights on every process there, so the other processes build the model empty instead.

    Read from the variables `accelerate launch` sets from the config; ZeRO-3 needs nothing of this kind: with a
    stage-3 DeepSpeed config selected, transformers builds the model under `deepspeed.zero.Init` (partitioned as it
    is created) and only the first process copies checkpoint values into it.
    """
    def flag(name):
        return os.environ.get(name, "false").lower() in ("1", "true", "yes")

    return flag("ACCELERATE_USE_FSDP") and flag("FSDP_CPU_RAM_EFFICIENT_LOADING") and int(os.environ.get("RANK", "0")) != 0


def _empty_model(base: str, dtype, trust_remote_code: bool, attn_implementation: str | None):
    """The model of `base` with uninitialised parameters (accelerate moves them to the meta device before sharding),
    its non-persistent buffers (rotary frequencies) computed: FSDP neither broadcasts nor shards those, each process
    keeps its own."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code,
                                                 attn_implementation=attn_implementation)
    # Uninitialised CPU storage, never written: the pages are not touched, so they cost address space, not RAM.
    # Meta tensors will not do: accelerate's prepare maps the optimizer's parameters to the sharded ones by
    # `data_ptr`, which is 0 for every meta tensor (all of them would become one parameter).
    model.to_empty(device="cpu")
    for module in model.modules():
        persistent = set(module.state_dict(keep_vars=True))
        local = [name for name, _ in module.named_buffers(recurse=False) if name not in persistent]
        for name in local:
            buffer = getattr(module, name)
            module.register_buffer(name, torch.zeros(buffer.shape, dtype=buffer.dtype, device="cpu"), persistent=False)
        if local:
            model._init_weights(module)  # transformers' own initialisation recomputes them (e.g. inv_freq)
    return model
