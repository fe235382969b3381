"""Every CLI command (but `serve`, tested with its server) on tiny models, as real processes: no line of a library's
warning text reaches the terminal (issue 22), and what the libraries said during a training run is in its
libraries.log instead. TRL stages show SFT's progress bar, never transformers' raw dict log rows."""

import os
import re
import subprocess
import sys

import pytest
from kotune_test_paths import REPO, SAMPLES

pytestmark = pytest.mark.slow

# Library noise as it looked before: DeepSpeed's accelerator line, Python warnings (FutureWarning, warnings.warn),
# transformers' and lm-eval's log lines, git's message from lm-eval, bitsandbytes' kernel note, TRL's dict logs.
NOISE = re.compile(r"Warning\b|\[WARNING\]|warnings\.warn|deprecated|fatal: |^\s*\{'|\[transformers\]|"
                   r"Setting accelerator|kernels-community|model kwarg|num_fewshot", re.MULTILINE)


def kotune(*args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("KOTUNE_VERBOSE", None)
    result = subprocess.run([sys.executable, "-m", "kotune.cli", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, env=env, input=stdin, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_no_library_warning_reaches_the_terminal(tmp_path):
    prefs = SAMPLES / "vaiv_preference.sample.json"
    short = ["train.max_steps=1", "data.max_length=256"]
    base, sft, merged = tmp_path / "base", tmp_path / "sft", tmp_path / "merged"
    task, docs = tmp_path / "task.yaml", tmp_path / "docs.jsonl"  # one local lm-eval task of two documents
    docs.write_text('{"q": "하늘은 파란가?", "label": 1}\n{"q": "불은 차가운가?", "label": 0}\n', encoding="utf-8")
    task.write_text(f"task: ko_yesno\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {docs}}}}}\n"
                    "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\n"
                    "doc_to_choice: ['아니오', '예']\ndoc_to_target: label\n", encoding="utf-8")
    commands = {
        "model tiny": ["model", "tiny", "--out", base, "--vocab-size", "1000"],
        "tokenizer train": ["tokenizer", "train", SAMPLES / "chatbotdata_ko.txt", "--vocab-size", "500",
                            "--out", tmp_path / "tok"],
        "data check": ["data", "check", SAMPLES / "koalpaca_v1.0.sample.json"],
        "data dedup": ["data", "dedup", SAMPLES / "koalpaca_v1.0.sample.json", "--out", tmp_path / "dedup.json"],
        "pretrain": ["pretrain", "recipes/pretrain/tiny_ko.yaml", f"tokenizer={base}", f"output_dir={tmp_path / 'pt'}",
                     "train.max_steps=1", "data.files=[data/samples/chatbotdata_ko.txt]", "init.num_hidden_layers=1"],
        "sft (LoRA)": ["sft", "recipes/sft/quickstart_tiny.yaml", f"model={base}", f"output_dir={sft}", "method=lora",
                       "train.max_steps=2", "data.max_length=256", "data.eval_fraction=0.02"],
        "data preview": ["data", "preview", "recipes/sft/quickstart_tiny.yaml", f"model={base}", "--limit", "1"],
        "lora merge": ["lora", "merge", sft, "--out", merged],
        "reward": ["reward", "recipes/preference/tiny_rm.yaml", f"model={merged}", f"output_dir={tmp_path / 'rm'}",
                   f"data.files=[{prefs}]", "data.max_pairs=32", *short],
        "dpo": ["dpo", "recipes/preference/tiny_dpo.yaml", f"model={merged}", f"output_dir={tmp_path / 'dpo'}",
                "data.max_pairs=32", *short],
        "ppo (grpo)": ["ppo", "recipes/preference/tiny_ppo.yaml", f"model={merged}", f"reward_model={tmp_path / 'rm'}",
                       f"output_dir={tmp_path / 'grpo'}", "algo=grpo", "train.max_steps=1", "data.max_prompts=8",
                       "generation.max_new_tokens=4"],
        "ppo": ["ppo", "recipes/preference/tiny_ppo.yaml", f"model={merged}", f"reward_model={tmp_path / 'rm'}",
                f"output_dir={tmp_path / 'ppo'}", "train.max_steps=1", "data.max_prompts=8", "generation.max_new_tokens=4"],
        "eval kobest": ["eval", "kobest", merged, "--tasks", "boolq", "--limit", "2", "--out", tmp_path / "eval"],
        "eval lm-eval": ["eval", "lm-eval", merged, "--tasks", task, "--out", tmp_path / "eval"],
        "eval generate": ["eval", "generate", sft, "--limit", "2", "--max-new-tokens", "4", "--out", tmp_path / "eval"],
    }
    noisy = {}
    for name, args in commands.items():
        result = kotune(*args)
        lines = NOISE.findall(result.stdout + result.stderr)
        if lines:
            noisy[name] = [line for line in (result.stdout + result.stderr).splitlines() if NOISE.search(line)][:5]
    chat = kotune("chat", merged, "--max-new-tokens", "4", "--threads", "1", stdin="안녕하세요\n/exit\n")
    if NOISE.search(chat.stdout + chat.stderr):
        noisy["chat"] = [line for line in (chat.stdout + chat.stderr).splitlines() if NOISE.search(line)][:5]
    assert not noisy, noisy
    # What was kept off the screen is in the run's log (DeepSpeed is imported by every training stage on CPU).
    assert (tmp_path / "dpo" / "libraries.log").is_file()
    dpo = (tmp_path / "dpo" / "metrics.jsonl").read_text()
    assert '"lr":' in dpo and '"learning_rate"' not in dpo  # SFT's metric names
