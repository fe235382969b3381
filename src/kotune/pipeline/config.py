"""The pipeline recipe: which stages run, each from its own stage recipe plus overrides.

The sections of the stages that are not recipe stages (tokenizer, evaluation) are those commands' own config
classes less what the pipeline sets. The pipeline wires the stages together (each one's model is the previous one's output, every output lives under
`run_dir`), so the stage recipes stay the same files users run one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kotune.common.options import opt
from kotune.eval.config import GenerateSection, JudgeSection, KobestSection, LmEvalSection
from kotune.pretrain.tokenizer_config import TokenizerSection

# The order stages always run in; a recipe lists the ones it wants.
ORDER = ("check", "tokenizer", "pretrain", "selfinstruct", "sft", "reward", "ppo", "dpo", "eval_kobest",
         "eval_lm_eval", "eval_generate", "eval_judge")


@dataclass
class StageRecipe:
    recipe: str | None = opt(None, "the stage's own recipe (recipes/<stage>/...); model and output paths are set by the pipeline")
    set: dict = opt({}, "overrides of that recipe as dotted keys, e.g. {train.max_steps: 10}")


@dataclass
class PipelineConfig:
    """Base -> [tokenizer -> pretrain] -> [selfinstruct] -> SFT -> [reward -> PPO | DPO] -> evaluation -> report."""

    run_dir: str = opt(help="one folder for every stage's output, the report and pipeline.json")
    base_model: str | None = opt(None, "the model SFT starts from (hub id or folder) when the pipeline does not pre-train one")
    check: list[str] = opt([], "data files to validate first (`kotune data check`); problems are reported, training decides")
    tokenizer: TokenizerSection | None = opt(None, "train a Korean tokenizer for pre-training")
    pretrain: StageRecipe | None = opt(None, "pre-train the base model")
    selfinstruct: StageRecipe | None = opt(None, "generate instruction data from a teacher; the output joins SFT's data")
    sft: StageRecipe | None = opt(None, "supervised fine-tuning")
    reward: StageRecipe | None = opt(None, "reward model (for PPO)")
    ppo: StageRecipe | None = opt(None, "PPO against the reward model")
    dpo: StageRecipe | None = opt(None, "DPO from the SFT model")
    eval_kobest: KobestSection | None = opt(None, "KoBEST through lm-eval: the base model and every trained stage")
    eval_lm_eval: LmEvalSection | None = opt(None, "any lm-eval tasks (names or a folder of task YAMLs): the base "
                                                   "model and every trained stage")
    eval_generate: GenerateSection | None = opt(None, "generation checks: stop rate, repetition, loops")
    eval_judge: JudgeSection | None = opt(None, "pairwise judging by an OpenAI-compatible judge: the final model vs "
                                                "every earlier stage's model and each listed endpoint")
    nproc: int | None = opt(None, "train pretrain, sft, reward, dpo (and ppo with algo rloo|grpo) on N processes, each "
                                  "stage launched as `kotune STAGE --nproc N` would; the other stages run in this process")
    accelerate_config: str | None = opt(None, "launch those stages with this accelerate config (recipes/accelerate/)")

    def __post_init__(self) -> None:
        if self.sft is None:
            raise ValueError("sft: a pipeline needs an sft stage")
        if self.ppo and not self.reward:
            raise ValueError("ppo: needs a reward stage before it")
        if self.ppo and self.dpo:
            raise ValueError("ppo, dpo: choose one chat-tuning stage")
        if self.pretrain is None and self.base_model is None:
            raise ValueError("base_model: set it, or add a pretrain stage")
        if self.nproc is not None and self.nproc < 1:
            raise ValueError("nproc: must be at least 1")

    def stages(self) -> list[str]:
        return [name for name in ORDER if getattr(self, name)]
