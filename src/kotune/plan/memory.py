"""Per-device memory of one training job: static state per engine plus the step's activations and transients.

What kotune keeps (training/loop.py, sft/train.py, models/load.py): trained weights in fp32 with AdamW's two fp32
moments (no separate master copy), under bf16 autocast whose cache holds a bf16 copy of every weight a matmul uses
for the whole optimizer step (one autocast per step); frozen models and a LoRA base in the compute dtype; a QLoRA
base in NF4 with embeddings, norms and head in fp32 (PEFT's prepare_model_for_kbit_training). DeepSpeed keeps bf16
weights with fp32 master copies in its optimizer.

Activations are what autograd saves per token, counted tensor by tensor from transformers' GPT-NeoX and LLaMA
layers with sdpa (flash kernels: output + log-sum-exp, no seq x seq matrix), see `_layer_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kotune.plan.shapes import ModelShape

ENGINES = ("single", "ddp", "fsdp2", "zero2", "zero3")
GIB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 blocks (double quant)


@dataclass(frozen=True)
class Job:
    """One training computation as the planner sees it."""

    model: ModelShape
    method: str = "full"  # full | lora | qlora
    micro_batch: int = 1  # sequences per forward pass (pairs count twice)
    length: int = 2048
    precision: str = "bf16"  # bf16 | fp32
    checkpointing: bool = False
    lm_head: bool = True  # False: a reward model / critic (scalar head, no vocabulary logits)
    lora_r: int = 8
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | str = ()
    frozen: tuple[tuple[int, bool], ...] = ()  # frozen copies held beside it: (parameters, is a quantized base)
    extra_trained: int = 0  # a second model trained in full beside it (PPO's critic), parameters
    kv_cache_tokens: int = 0  # generation (PPO rollouts): cached tokens
    single_device: bool = False  # the stage runs on one device only (kotune's PPO)
    device: str = "cuda"  # cuda: fused AdamW; cpu: single-tensor AdamW with per-tensor temporaries


def _targets(job: Job):
    if job.lora_targets:
        return list(job.lora_targets) if not isinstance(job.lora_targets, str) else job.lora_targets
    from kotune.models.lora import target_modules_for

    return target_modules_for(job.model.model_type, None)


def trainable(job: Job) -> int:
    if job.method == "full":
        return job.model.params - (0 if job.lm_head else job.model.head - job.model.hidden)
    return job.model.lora_params(_targets(job), job.lora_r)[0]


def _layer_bytes(job: Job) -> float:
    """Bytes autograd keeps per token for one decoder layer (counted from the modeling code, fp32 and bf16 autocast).

    GPT-NeoX (parallel residual): input x, LayerNorm mean/rstd x2, ln1 out, qkv (3h), rotated q and k, sdpa output
    and log-sum-exp (one per head), the dense projection's input, ln2 out, fc1 out, gelu out.
    LLaMA: x, rstd, x*rstd, norm out (twice: attention and MLP), q, k, v (GQA: kv width), sdpa output and
    log-sum-exp, gate, silu(gate), up, and the down projection's input.
    Under autocast the residual stream and norms stay fp32 and each matmul input gets a bf16 copy.
    A frozen base (LoRA) saves no input of a frozen linear layer, only what the adapters and nonlinearities need.
    """
    m, h, i, kv, nh = job.model, job.model.hidden, job.model.intermediate, job.model.kv_dim, job.model.heads
    neox = m.model_type == "gpt_neox"
    if job.method == "full":
        if job.precision == "fp32":
            return 4 * ((10 * h + 2 * i + nh + 4) if neox else (8 * h + 2 * kv + nh + 4 * i + 2))
        fp32 = (3 * h + 4 + nh) if neox else (6 * h + 2 + nh)
        half = (9 * h + 2 * i) if neox else (4 * h + 2 * kv + 4 * i)
        return 4 * fp32 + 2 * half
    size = 4 if job.precision == "fp32" else 2
    base = (8 * h + i + nh + 4) if neox else (5 * h + 2 * kv + nh + 2 + 3 * i)
    _, width, adapted = m.lora_params(_targets(job), job.lora_r)
    # Per adapted module (fp32 adapters): lora_A's output (r), and with dropout its dropped input and the copy the
    # matmul takes of it (measured: one to two input widths per module; the plan takes two).
    extra = adapted * job.lora_r + (2 * width if job.lora_dropout > 0 else 0)
    return size * base + 4 * extra / m.layers


def _top_bytes(job: Job) -> float:
    """Per token outside the layers: ids (int64), final norm, head input, fp32 log-probabilities of the loss."""
    h = job.model.hidden
    norm = (2 * h + 2) if job.model.model_type == "gpt_neox" else (3 * h + 1)
    return 8 + 4 * norm + (4 * job.model.vocab if job.lm_head else 0)


def activations(job: Job) -> dict[str, float]:
    """Bytes of one micro-batch: saved activations (with or without checkpointing), a layer's, and the transient
    of the loss (gradient of the log-probabilities and of the logits, fp32, at the start of backward)."""
    tokens = job.micro_batch * job.length
    layer = _layer_bytes(job) * tokens
    top = _top_bytes(job) * tokens
    resid = (4 if job.method == "full" or job.precision == "fp32" else 2) * job.model.hidden * tokens
    saved = (job.model.layers * resid + layer if job.checkpointing else job.model.layers * layer) + top
    head = (8 + (2 if job.precision == "bf16" else 0)) * job.model.vocab * tokens if job.lm_head else 0
    return {"saved": saved, "layer": layer, "head_transient": head}


@dataclass
class Estimate:
    """Bytes per device by component, and the peak."""

    components: dict[str, float]
    peak: float
    host_load: dict[str, float]


def _frozen_bytes(job: Job, params: int, quantized: bool) -> float:
    if quantized:  # QLoRA base: NF4 linear layers; embeddings, norms and head in fp32
        linear = job.model.layer_linear * job.model.layers
        return linear * NF4_BYTES + (job.model.params - linear) * 4
    return params * (2 if job.precision == "bf16" else 4)


def estimate(job: Job, engine: str = "single", gpus: int = 1) -> Estimate | None:
    """Per-device memory of `job` under `engine` over `gpus` devices; None where the combination does not run
    (QLoRA's 4-bit base is not sharded by FSDP2/ZeRO-3 in kotune, and ZeRO-2 gains nothing on it)."""
    if engine not in ENGINES:
        raise ValueError(f"engine: unknown {engine!r}; known: {', '.join(ENGINES)}")
    n = 1 if engine == "single" else gpus
    if job.method == "qlora" and engine not in ("single", "ddp") or job.single_device and engine != "single":
        return None
    bf16, m, t, sharded = job.precision == "bf16", job.model, trainable(job), engine in ("fsdp2", "zero3")
    c: dict[str, float] = {}
    layer_gather = 2 * m.layer * (2 if bf16 else 4)  # current + prefetched layer, gathered
    if job.method == "full":
        if engine in ("single", "ddp"):
            c.update({"weights": 4 * t, "gradients": 4 * t, "optimizer": 8 * t})
            if bf16:
                c["autocast copies"] = 2 * (m.layer_linear * m.layers + (m.head if job.lm_head else 0))
            if engine == "ddp":
                c["DDP buckets"] = 4 * t
        elif engine == "zero2":
            c.update({"weights": (2 if bf16 else 4) * t, "gradients": 4 * t / n,
                      "optimizer": (12 if bf16 else 8) * t / n})
        elif engine == "zero3":
            c.update({"weights": (2 if bf16 else 4) * t / n + layer_gather, "gradients": 4 * t / n,
                      "optimizer": (12 if bf16 else 8) * t / n})
        else:  # fsdp2: fp32 shards, bf16 gathered layers (mixed-precision policy)
            c.update({"weights": 4 * t / n + layer_gather, "gradients": 4 * t / n, "optimizer": 8 * t / n})
    else:
        base = _frozen_bytes(job, m.params, job.method == "qlora")
        c.update({"frozen base": base / n + layer_gather if sharded else base, "weights": 4 * t, "gradients": 4 * t,
                  "optimizer": 8 * t})
    if job.extra_trained:  # fp32 weights, gradients, AdamW moments (+ its autocast copies): one device (PPO)
        c["critic"] = (16 + (2 if bf16 else 0)) * job.extra_trained
    frozen = sum(_frozen_bytes(job, p, q) for p, q in job.frozen)
    if frozen:
        c["frozen models"] = frozen / (n if sharded else 1)
    act = activations(job)
    c.update({"activations": act["saved"], "loss transient": act["head_transient"]})
    if job.kv_cache_tokens:
        c["KV cache (rollouts)"] = job.kv_cache_tokens * m.layers * 2 * m.kv_dim * (2 if bf16 else 4)
    static = sum(v for k, v in c.items() if k not in ("gradients", "activations", "loss transient",
                                                      "KV cache (rollouts)", "DDP buckets"))
    grads = c["gradients"] + c.get("DDP buckets", 0)
    head_share = (m.head / m.params) if job.method == "full" else 0
    opt_tmp = 2 * 4 * (m.largest if job.method == "full" else 0) if job.device == "cpu" else 0
    peak = static + max(
        act["saved"] + act["head_transient"] + head_share * grads,  # backward starts: logits' gradients alive
        grads + act["layer"],  # backward ends: every gradient, the first layer's activations (recomputed or kept)
        grads + opt_tmp,  # optimizer step
        c.get("KV cache (rollouts)", 0),  # sampling
    )
    return Estimate(c, peak, host_load(job, engine, gpus))


def host_load(job: Job, engine: str, gpus: int) -> dict[str, float]:
    """Host RAM per process while loading: every process reads the whole model, or (ZeRO-3 zero3_init,
    FSDP2 cpu_ram_efficient_loading) only the first while the others hold their shard."""
    n = 1 if engine == "single" else gpus
    dtype = 4 if job.method == "full" else 2
    whole = (job.model.params * dtype + job.extra_trained * 4
             + sum(p * (2 if job.precision == "bf16" else 4) for p, _ in job.frozen))
    if job.method == "qlora":
        whole = 2 * job.model.layer  # weights stream to the GPU layer by layer as they are quantized
    low = whole / n if engine in ("fsdp2", "zero3") else whole
    return {"every process": whole, "node, every process loads": whole * n,
            "other processes, first loads": low, "node, first loads": whole + low * (n - 1)}
