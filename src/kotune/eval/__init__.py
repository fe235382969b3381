"""Evaluation: KoBEST through lm-evaluation-harness (`kobest`), generation checks (`generation_checks` for the
measures, `generate_eval` for running a model on a prompt set), and a Markdown report with charts (`report`).

Imports kotune.models, kotune.data, kotune.common and kotune.config only; never another stage.
"""
