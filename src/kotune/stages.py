"""The stages run from a YAML recipe, in one place for the CLI, the pipeline and the recipe tests."""

from __future__ import annotations

# Stages run from a YAML recipe: name -> (help, config dataclass, run function). A recipe's first line names
# its command (`# kotune sft ...`), which is how tests find the config class that validates it.
RECIPE_STAGES: dict[str, tuple[str, str, str]] = {
    "pretrain": ("causal-LM pre-training on raw Korean text, from scratch or continued", "kotune.pretrain.config.PretrainConfig",
                 "kotune.pretrain.train.run"),
    "sft": ("supervised fine-tuning (full or LoRA) from a YAML recipe", "kotune.sft.config.SFTConfig", "kotune.sft.train.run"),
    "reward": ("reward model: the SFT model + a scalar head, pairwise loss, held-out pairwise accuracy",
               "kotune.preference.config.RewardConfig", "kotune.preference.reward.run"),
    "dpo": ("DPO (or IPO/KTO/ORPO/SimPO through TRL) from the SFT model, full or LoRA",
            "kotune.preference.config.DPOConfig", "kotune.preference.dpo.run"),
    "ppo": ("PPO against the trained reward model (critic, KL to a frozen reference, GAE), or RLOO/GRPO",
            "kotune.preference.config.PPOConfig", "kotune.preference.ppo.run"),
    "pipeline": ("the whole pipeline in one run folder: [tokenizer -> pretrain] -> SFT -> [reward -> PPO | DPO] -> "
                 "evaluation -> report", "kotune.pipeline.config.PipelineConfig", "kotune.pipeline.run.run"),
    "corpus": ("refine a Korean pre-training corpus on datatrove: Korean filters, exact and MinHash dedup, PII "
               "masking, token files for pretrain; local, Slurm or Ray workers", "kotune.corpus.config.CorpusRecipe",
               "kotune.corpus.run.run"),
    "selfinstruct": ("generate Korean instruction data from an OpenAI-compatible teacher (self-instruct); resumable",
                     "kotune.selfinstruct.config.SelfInstructConfig", "kotune.selfinstruct.run.run"),
}

# Stages that train through accelerate or TRL and so run multi-process (`--nproc`, accelerate launch, torchrun).
LAUNCHABLE_STAGES = ("pretrain", "sft", "reward", "dpo", "ppo")
