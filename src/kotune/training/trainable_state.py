"""Checkpoints of a model with frozen parameters (LoRA, QLoRA) hold only its trainable parameters.

accelerate's `save_state` writes the model's whole state dict: for LoRA on polyglot-ko-12.8b that is the ~25 GB
frozen base in every checkpoint, beside a few MB of adapter. The frozen base never changes, and a resumed run
rebuilds it from the recipe exactly as the first run did, so a checkpoint needs only what training changes:
trainable parameters, optimizer and scheduler state, RNG. Full fine-tuning (nothing frozen) is saved whole, as
before.

- One process and DDP: hooks around accelerate's own save and load narrow the state dict to the trainable
  parameters (a checkpoint written whole by an older kotune still loads: its extra tensors are the frozen ones).
- DeepSpeed: its engine's own switches (`exclude_frozen_parameters`, and a non-strict module load).
- FSDP: unchanged (sharded, whole model); accelerate gives no hook into its sharded writer.
"""

from __future__ import annotations

from pathlib import Path


def _trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def has_frozen_parameters(model) -> bool:
    return any(not p.requires_grad for p in model.parameters())


def save_kwargs(accelerator, model) -> dict:
    """Extra arguments for `accelerator.save_state` (DeepSpeed's switch; the hooks do the rest)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED and has_frozen_parameters(model):
        return {"exclude_frozen_parameters": True}
    return {}


def load_kwargs(accelerator, model) -> dict:
    """Extra arguments for `accelerator.load_state`: DeepSpeed must not expect the frozen tensors it left out."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED and has_frozen_parameters(model):
        return {"load_module_strict": False}
    return {}


def register(accelerator) -> None:
    """Make `accelerator.save_state`/`load_state` keep only trainable parameters of models with frozen ones.

    Call once, before the first save or load. The loop prepares one model; the hooks handle that case.
    """
    accelerator.register_save_state_pre_hook(_keep_trainable)
    accelerator.register_load_state_pre_hook(_load_trainable)


def _keep_trainable(models, weights, output_dir) -> None:
    """Narrow each state dict accelerate is about to write (empty under FSDP/DeepSpeed, which save their own)."""
    for model, state in zip(models, weights):
        if has_frozen_parameters(model):
            trainable = _trainable_names(model)
            for name in [n for n in state if n not in trainable]:
                del state[name]


def _load_trainable(models, input_dir) -> None:
    """Load the trainable tensors of the one prepared model ourselves, and take it out of accelerate's list (its
    loader is strict: it would refuse a file without the frozen base)."""
    from safetensors.torch import load_file

    if len(models) != 1 or not has_frozen_parameters(models[0]):
        return
    model = models[0]
    path = Path(input_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{input_dir}: no model.safetensors in this checkpoint; it cannot be resumed")
    state = load_file(path)
    trainable, known = _trainable_names(model), set(model.state_dict())
    missing, foreign = sorted(trainable - state.keys()), sorted(state.keys() - known)
    if missing or foreign:
        raise ValueError(
            f"{path}: does not fit this run's model ({len(missing)} trainable parameter(s) missing, e.g. "
            f"{missing[:2]}; {len(foreign)} unknown tensor(s), e.g. {foreign[:2]}); was it written with another "
            "method, LoRA setting or model? Resume with the recipe that wrote it, or start without train.resume")
    # Only the trainable tensors: in an older whole-model checkpoint the rest equals the freshly built base.
    model.load_state_dict({name: state[name] for name in trainable}, strict=False)
    models.clear()
