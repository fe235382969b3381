"""Recipes of the chat-tuning stages (`kotune reward`, `kotune dpo`, `kotune ppo`): one dataclass per section.

`LoraConfig` is shared with SFT through `kotune.training.config`. The optimiser sections differ per stage (TRL
trainers and PPO take other fields than kotune's own loop), so each stage states its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.config import opt
from kotune.data.formats import FORMATS
from kotune.data.templates import TEMPLATE_NAMES
from kotune.training.config import LoraConfig, check_optimisation
from kotune.training.tracking import check_report_to, report_to_option

# DPOTrainer's loss types in TRL 1.16 (trl/trainer/dpo_trainer.py, `_compute_loss`).
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sigmoid_norm",
)


def _check_data(format: str | None, template: str, max_length: int) -> None:
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: unknown {format!r}; known: {', '.join(FORMATS)}")
    if template not in TEMPLATE_NAMES:
        raise ValueError(f"template: unknown {template!r}; known: {', '.join(TEMPLATE_NAMES)}")
    if max_length < 8:
        raise ValueError("max_length: must be at least 8")


@dataclass
class PairDataConfig:
    files: list[str] = opt([], "preference files: {prompt, chosen, rejected} (VAIV RLHF) or KoChatGPT RM rankings "
                               "(every ordered pair of the ranked completions)")
    eval_files: list[str] = opt([], "held-out pairs for pairwise accuracy; unset: eval_fraction of the prompts of files")
    eval_fraction: float = opt(0.1, "fraction of prompts held out when eval_files is unset (pairs of one prompt stay together)")
    format: str | None = opt(None, f"input format, detected when unset: {', '.join(FORMATS)}")
    template: str = opt("auto", "chat template; auto takes the SFT model's saved chat_template, so preference "
                                f"training renders exactly what SFT trained ({', '.join(TEMPLATE_NAMES)})")
    max_length: int = opt(1024, "prompt + reply longer than this many tokens keep their start (the reply is cut)")
    skip_invalid: bool = opt(False, "train without invalid pairs (empty side, chosen == rejected, ...) instead of "
                                    "stopping; each is listed and counted in the report")
    max_pairs: int | None = opt(None, "use only the first N training pairs (quick runs)")

    def __post_init__(self) -> None:
        _check_data(self.format, self.template, self.max_length)
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")


@dataclass
class TrainConfig:
    epochs: float = opt(1.0, "passes over the training pairs")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = opt(1e-5, "peak learning rate")
    lr_scheduler: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate schedule after warm-up")
    warmup_ratio: float = opt(0.03, "fraction of steps spent warming up")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    global_batch_size: int = opt(16, "pairs per optimizer step over all processes")
    micro_batch_size: int = opt(4, "pairs per forward pass per process; gradient accumulation makes up the rest")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)")
    seed: int = opt(42, "seed for the new head, data order and dropout")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "auto: bf16 on a GPU that has it, else fp32 (CPU)")
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory (for big models on GPU)")
    log_every: int = opt(1, "write metrics every N optimizer steps")
    report_to: list[str] = report_to_option()

    def __post_init__(self) -> None:
        check_optimisation(self)
        check_report_to(self.report_to)


@dataclass
class RewardConfig:
    """Reward model: the SFT model with a scalar head (AutoModelForSequenceClassification, num_labels=1), trained
    with the pairwise loss -log sigmoid(r_chosen - r_rejected)."""

    model: str = opt(help="the SFT model folder (or hub id) the reward model starts from")
    output_dir: str = opt(help="where the reward model (backbone + head), tokenizer, reward_probe.json, "
                               "reward_report.json, metrics.jsonl and curves.png are written")
    overwrite: bool = opt(False, "clear what an earlier run left in output_dir (outputs, checkpoints) first; without "
                                 "it a used output_dir is refused (CLI: --overwrite)")
    data: PairDataConfig = opt(PairDataConfig(), "preference pairs")
    tokenizer: str | None = opt(None, "tokenizer hub id or folder; unset: the model's")
    trust_remote_code: bool = opt(False, "run code shipped with the model (only for models you trust)")
    method: Literal["full", "lora"] = opt("full", "full fine-tuning, or LoRA merged into the backbone at the end "
                                                  "(the head is always trained in full)")
    lora: LoraConfig = opt(LoraConfig(), "LoRA settings (method: lora)")
    train: TrainConfig = opt(TrainConfig(), "optimisation")
    center_rewards_coefficient: float | None = opt(None, "pull mean rewards towards 0 (Eisenstein et al. 2023; 0.01)")
    probe_size: int = opt(8, "held-out sequences whose scores are saved with the model so every later load is checked")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one preference file is needed")
        if self.probe_size < 1:
            raise ValueError("probe_size: must be at least 1")


@dataclass
class DPOConfig:
    """Offline preference optimisation from the SFT model: DPO (and its TRL loss variants), KTO, ORPO or SimPO."""

    model: str = opt(help="the SFT model folder (or hub id): the policy starts here and DPO/KTO use it as the frozen reference")
    output_dir: str = opt(help="where the model or LoRA adapter, tokenizer, dpo_report.json, metrics.jsonl and curves.png go")
    overwrite: bool = opt(False, "clear what an earlier run left in output_dir (outputs, checkpoints) first; without "
                                 "it a used output_dir is refused (CLI: --overwrite)")
    data: PairDataConfig = opt(PairDataConfig(), "preference pairs")
    tokenizer: str | None = opt(None, "tokenizer hub id or folder; unset: the model's")
    trust_remote_code: bool = opt(False, "run code shipped with the model (only for models you trust)")
    algo: Literal["dpo", "kto", "orpo", "simpo"] = opt(
        "dpo", "dpo: trl.DPOTrainer; kto: trl.KTOTrainer (each pair becomes a desirable and an undesirable example); "
        "orpo: trl.experimental ORPOTrainer (no reference); simpo: trl.experimental CPOTrainer with loss simpo"
    )
    loss_type: str = opt("sigmoid", f"DPO loss (algo: dpo): {', '.join(DPO_LOSS_TYPES)}")
    beta: float = opt(0.1, "strength of the pull towards the reference (DPO/KTO beta; ORPO lambda; SimPO beta)")
    simpo_gamma: float = opt(0.5, "SimPO target reward margin (algo: simpo)")
    sft_weight: float = opt(0.0, "algo dpo: add this times the NLL of the chosen replies (RPO, TRL's loss_type "
                                 "'sft'); keeps the policy on fluent replies that stop, where plain DPO can drift")
    method: Literal["full", "lora"] = opt("full", "full fine-tuning (reference = a frozen copy) or LoRA (reference = "
                                                  "the same network with the adapter disabled)")
    lora: LoraConfig = opt(LoraConfig(), "LoRA settings (method: lora)")
    train: TrainConfig = opt(TrainConfig(), "optimisation")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one preference file is needed")
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"loss_type: unknown {self.loss_type!r}; known: {', '.join(DPO_LOSS_TYPES)}")
        if self.algo != "dpo" and self.loss_type != "sigmoid":
            raise ValueError(f"loss_type: only algo dpo has loss variants; algo {self.algo} takes none")
        if self.beta <= 0:
            raise ValueError("beta: must be positive")
        if self.sft_weight < 0 or (self.sft_weight and self.algo != "dpo"):
            raise ValueError("sft_weight: a non-negative weight, for algo dpo only")


@dataclass
class PromptDataConfig:
    files: list[str] = opt([], "prompt files: {prompt} (KoChatGPT PPO); generation starts from each prompt")
    format: str | None = opt(None, f"input format, detected when unset: {', '.join(FORMATS)}")
    template: str = opt("auto", "chat template; auto takes the SFT model's saved chat_template")
    max_prompt_length: int = opt(256, "prompts longer than this many tokens are skipped (and counted)")
    skip_invalid: bool = opt(False, "use the valid prompts when some records are invalid (each is listed)")
    max_prompts: int | None = opt(None, "use only the first N prompts (quick runs)")

    def __post_init__(self) -> None:
        _check_data(self.format, self.template, self.max_prompt_length)


@dataclass
class GenerationConfig:
    max_new_tokens: int = opt(128, "longest sampled reply")
    temperature: float = opt(1.0, "sampling temperature (log-probabilities are taken at the same temperature)")
    top_k: int = opt(0, "top-k sampling (0: off; PPO's ratio assumes the full distribution, so keep 0)")
    top_p: float = opt(1.0, "nucleus sampling (1: off; keep 1 for the same reason)")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens: must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature: must be positive")


@dataclass
class PPOHyperConfig:
    rollout_batch_size: int = opt(16, "replies sampled per step, one per prompt (rloo/grpo: completions per step, "
                                      "num_generations for each of rollout_batch_size / num_generations prompts)")
    mini_batch_size: int = opt(4, "rollouts per PPO update")
    ppo_epochs: int = opt(4, "passes of PPO updates over each rollout batch (rloo/grpo: num_iterations)")
    kl_coef: float = opt(0.05, "per-token KL penalty to the frozen reference (rloo/grpo: their beta)")
    gamma: float = opt(1.0, "discount")
    lam: float = opt(0.95, "GAE lambda")
    cliprange: float = opt(0.2, "policy ratio clip (rloo/grpo: epsilon)")
    cliprange_value: float = opt(0.2, "value prediction clip around the rollout values")
    whiten_advantages: bool = opt(True, "normalise advantages per rollout batch")
    missing_eos_penalty: float | None = opt(None, "subtract this from the score of replies cut by max_new_tokens")
    num_generations: int = opt(4, "rloo/grpo: completions per prompt")

    def __post_init__(self) -> None:
        if self.rollout_batch_size % self.mini_batch_size:
            raise ValueError(f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of mini_batch_size "
                             f"({self.mini_batch_size})")
        if self.kl_coef < 0:
            raise ValueError("kl_coef: must be >= 0")
        if self.num_generations < 2:
            raise ValueError("num_generations: rloo/grpo compare completions of one prompt, so at least 2")


@dataclass
class PPOTrainConfig:
    steps: int = opt(100, "rollout + update steps")
    actor_learning_rate: float = opt(1e-6, "actor (policy) learning rate")
    critic_learning_rate: float = opt(1e-5, "critic (value model) learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm, actor and critic each (0 disables)")
    seed: int = opt(42, "seed for sampling, data order and dropout")
    precision: Literal["auto", "fp32", "bf16"] = opt("auto", "auto: bf16 autocast on a GPU that has it, else fp32")
    log_every: int = opt(1, "write metrics every N steps")
    report_to: list[str] = report_to_option()

    def __post_init__(self) -> None:
        check_report_to(self.report_to)
        if self.steps < 1:
            raise ValueError("steps: must be at least 1")
        if self.actor_learning_rate <= 0 or self.critic_learning_rate <= 0:
            raise ValueError("actor_learning_rate and critic_learning_rate must be positive")


@dataclass
class PPOConfig:
    """Online RL from the SFT model against the trained reward model: PPO (our own, see kotune/preference/ppo.py),
    or TRL's RLOO / GRPO."""

    model: str = opt(help="the SFT model folder: the actor starts here and a frozen copy is the KL reference")
    reward_model: str = opt(help="the folder `kotune reward` wrote: reward model, and the critic's starting point")
    output_dir: str = opt(help="where the actor (model or LoRA adapter), critic/, tokenizer, ppo_report.json, "
                               "metrics.jsonl and curves.png go")
    overwrite: bool = opt(False, "clear what an earlier run left in output_dir (outputs, checkpoints) first; without "
                                 "it a used output_dir is refused (CLI: --overwrite)")
    algo: Literal["ppo", "rloo", "grpo"] = opt("ppo", "ppo: actor + critic + GAE (ours); rloo, grpo: TRL trainers "
                                                      "scored by the same reward model")
    data: PromptDataConfig = opt(PromptDataConfig(), "prompts")
    tokenizer: str | None = opt(None, "tokenizer hub id or folder; unset: the model's")
    trust_remote_code: bool = opt(False, "run code shipped with the models (only for models you trust)")
    method: Literal["full", "lora"] = opt("full", "actor: full fine-tuning (reference = frozen copy) or LoRA "
                                                  "(reference = the actor with its adapter disabled)")
    lora: LoraConfig = opt(LoraConfig(), "LoRA settings (method: lora)")
    generation: GenerationConfig = opt(GenerationConfig(), "sampling of replies")
    ppo: PPOHyperConfig = opt(PPOHyperConfig(), "PPO / RLOO / GRPO hyper-parameters")
    train: PPOTrainConfig = opt(PPOTrainConfig(), "optimisation")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one prompt file is needed")

    def multi_process_error(self) -> str | None:
        """Why this run cannot be launched on several processes; None when it can (the CLI asks before launching)."""
        if self.algo == "ppo":
            return ("algo=ppo runs on one device (every process would write the same output); launch it without "
                    "--nproc / torchrun, or use algo=rloo or algo=grpo, which TRL runs multi-process")
        return None
