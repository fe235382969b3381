"""Evaluation: KoBEST (`kobest`) and any other lm-eval task (`lm_tasks`) through one lm-evaluation-harness call
(`harness`), generation checks (`generation_checks` for the measures, `generate_eval` for running a model on a
prompt set), and a Markdown report with charts (`report`), printed and written by the commands (`commands`).

Imports kotune.models, kotune.data, kotune.common and kotune.config only; never another stage.
"""
