"""Chat tuning after SFT: `reward` (reward model), `dpo` (DPO, KTO, ORPO, SimPO) and `ppo` (PPO, RLOO, GRPO).

Each stage has a config dataclass in `config` and a `run(cfg)`. All of them render data with the SFT model's
chat template through `kotune.data.tokenize` (`pairs`), so what is trained is exactly what SFT trained and serving
renders. TRL does the reward, DPO-family and RLOO/GRPO training (`trl_backend`, `online`); PPO is our own
(`ppo`, `rollout`, `ppo_math`; why: see `ppo`).
"""
