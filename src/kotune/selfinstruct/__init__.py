"""Self-instruct for Korean: new instruction data from an OpenAI-compatible teacher (`kotune selfinstruct`).

config (recipe) -> prompt (Korean requirements + seed tasks) -> teacher (HTTP, retries) -> parse -> filters ->
dedup (`kotune.data.dedup`) -> output (append-only JSON Lines, resumable); `run.run(cfg)` ties them together.
"""
