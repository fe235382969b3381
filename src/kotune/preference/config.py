"""Recipes of the chat-tuning stages (`kotune reward`, `kotune dpo`, `kotune ppo`): one dataclass per section.

The model section, LoRA, the optimisation section and the data-check rule are shared with SFT
and pre-training through `kotune.training.config`; PPO's section adds the critic's learning rate to the shared one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt
from kotune.data.formats import FORMATS
from kotune.data.templates import TEMPLATE_NAMES
from kotune.training.config import OptimConfig, TunedStageConfig, check_data_section
from kotune.training.tracking import check_report_to

# DPOTrainer's loss types in TRL 1.16 (trl/trainer/dpo_trainer.py, `_compute_loss`).
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sigmoid_norm",
)


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
        check_data_section(self)
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")


@dataclass(kw_only=True)
class RewardConfig(TunedStageConfig):
    """Reward model: the SFT model with a scalar head (AutoModelForSequenceClassification, num_labels=1), trained
    with the pairwise loss -log sigmoid(r_chosen - r_rejected). With method lora the adapter is merged into the
    backbone at the end (the head is always trained in full). Writes reward_probe.json beside the model."""

    data: PairDataConfig = opt(PairDataConfig(), "preference pairs")
    train: OptimConfig = opt(OptimConfig(epochs=1.0, learning_rate=1e-5), "optimisation")
    center_rewards_coefficient: float | None = opt(None, "pull mean rewards towards 0 (Eisenstein et al. 2023; 0.01)")
    probe_size: int = opt(8, "held-out sequences whose scores are saved with the model so every later load is checked")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one preference file is needed")
        if self.probe_size < 1:
            raise ValueError("probe_size: must be at least 1")


@dataclass(kw_only=True)
class DPOConfig(TunedStageConfig):
    """Offline preference optimisation from the SFT model: DPO (and its TRL loss variants), KTO, ORPO or SimPO.
    The policy starts from `model`, and DPO/KTO use it as the frozen reference."""

    data: PairDataConfig = opt(PairDataConfig(), "preference pairs")
    algo: Literal["dpo", "kto", "orpo", "simpo"] = opt(
        "dpo", "dpo: trl.DPOTrainer; kto: trl.KTOTrainer (each pair becomes a desirable and an undesirable example); "
        "orpo: trl.experimental ORPOTrainer (no reference); simpo: trl.experimental CPOTrainer with loss simpo"
    )
    loss_type: str = opt("sigmoid", f"DPO loss (algo: dpo): {', '.join(DPO_LOSS_TYPES)}")
    beta: float = opt(0.1, "strength of the pull towards the reference (DPO/KTO beta; ORPO lambda; SimPO beta)")
    simpo_gamma: float = opt(0.5, "SimPO target reward margin (algo: simpo)")
    sft_weight: float = opt(0.0, "algo dpo: add this times the NLL of the chosen replies (RPO, TRL's loss_type "
                                 "'sft'); keeps the policy on fluent replies that stop, where plain DPO can drift")
    train: OptimConfig = opt(OptimConfig(epochs=1.0, learning_rate=1e-5), "optimisation")

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
    eval_files: list[str] = opt([], "held-out prompts: the reward model scores replies to them before and after "
                                    "training; unset: eval_fraction of the distinct prompts of files")
    eval_fraction: float = opt(0.1, "fraction of distinct prompts held out when eval_files is unset (seeded by "
                                    "train.seed)")
    format: str | None = opt(None, f"input format, detected when unset: {', '.join(FORMATS)}")
    template: str = opt("auto", "chat template; auto takes the SFT model's saved chat_template")
    max_prompt_length: int = opt(256, "prompts longer than this many tokens are skipped (and counted)")
    skip_invalid: bool = opt(False, "use the valid prompts when some records are invalid (each is listed)")
    max_prompts: int | None = opt(None, "use only the first N prompts of files (quick runs)")

    def __post_init__(self) -> None:
        check_data_section(self)
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")


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
class PPOTrainConfig(OptimConfig):
    """The shared optimisation section (`OptimConfig`) for online RL. `learning_rate` is the actor's; the critic
    (algo ppo) has its own. The batches are the rollouts of the `ppo` section, so `global_batch_size` and
    `micro_batch_size` are not read here. `steps` and `actor_learning_rate`, this section's names before it was
    shared, are still read as `max_steps` and `learning_rate`."""

    epochs: float = opt(1.0, "passes over the training prompts, when max_steps is unset")
    max_steps: int | None = opt(None, "rollout + update steps (overrides epochs)")
    learning_rate: float | None = opt(None, "actor (policy) learning rate; unset: 1e-6")
    critic_learning_rate: float = opt(1e-5, "critic (value model) learning rate (algo ppo)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = opt("constant", "learning-rate schedule after warm-up")
    warmup_ratio: float = opt(0.0, "fraction of steps spent warming up")
    global_batch_size: int | None = opt(None, "not read: ppo.rollout_batch_size is the batch of a step")
    micro_batch_size: int | None = opt(None, "not read: ppo.mini_batch_size is the batch of an update")
    precision: Literal["auto", "fp32", "bf16"] = opt("auto", "auto: bf16 autocast on a GPU that has it, else fp32")
    steps: int | None = opt(None, "old name of max_steps (still read)")
    actor_learning_rate: float | None = opt(None, "old name of learning_rate (still read)")

    def __post_init__(self) -> None:
        for old, new in (("steps", "max_steps"), ("actor_learning_rate", "learning_rate")):
            if getattr(self, old) is not None:
                if getattr(self, new) is not None and getattr(self, new) != getattr(self, old):
                    raise ValueError(f"{old} is the old name of {new}; give only {new}")
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)  # the saved config.yaml carries the new name only
        if self.learning_rate is None:
            self.learning_rate = 1e-6
        if self.global_batch_size is not None or self.micro_batch_size is not None:
            raise ValueError("global_batch_size and micro_batch_size are not read by ppo/rloo/grpo; set "
                             "ppo.rollout_batch_size and ppo.mini_batch_size")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps: must be at least 1")
        if self.epochs <= 0:
            raise ValueError("epochs: must be positive")
        if self.learning_rate <= 0 or self.critic_learning_rate <= 0:
            raise ValueError("learning_rate and critic_learning_rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio: must be in [0, 1)")
        check_report_to(self.report_to)

    def total_steps(self, prompts: int, prompts_per_step: int) -> int:
        """max_steps, or `epochs` passes over `prompts` training prompts at `prompts_per_step` a step."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * prompts / prompts_per_step))


@dataclass(kw_only=True)
class PPOConfig(TunedStageConfig):
    """Online RL from the SFT model against the trained reward model: PPO (our own, see kotune/preference/ppo.py),
    or TRL's RLOO / GRPO. The actor starts from `model`, whose frozen copy (LoRA: the actor with its adapter
    disabled) is the KL reference; PPO writes its critic to critic/ beside the actor."""

    reward_model: str = opt(help="the folder `kotune reward` wrote: reward model, and the critic's starting point")
    algo: Literal["ppo", "rloo", "grpo"] = opt("ppo", "ppo: actor + critic + GAE (ours); rloo, grpo: TRL trainers "
                                                      "scored by the same reward model")
    data: PromptDataConfig = opt(PromptDataConfig(), "prompts")
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
