"""`kotune eval generate` end to end: real models through kotune's generation engine, checks, jsonl and report.

Two tiny models with rigged output layers make the outcome certain: "looper" always emits one Korean token (so
its reply is that token until the limit: a loop that never stops) and "stopper" always emits EOS first.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kotune_test_paths import REPO

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 24


def _rig(src: Path, dst: Path, token: str | None, chat_template: str | None) -> Path:
    """Copy the tiny GPT-NeoX model so that it always emits `token` (or EOS when None).

    With the final LayerNorm's weight zeroed its output is its bias, the same vector at every position; making the
    output-embedding row of one token that vector (all other rows zero) gives that token the top logit everywhere.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from kotune.data.templates import install_template
    from kotune.models.load import load_tokenizer

    shutil.copytree(src, dst)
    tok = load_tokenizer(str(dst))
    model = AutoModelForCausalLM.from_pretrained(dst)
    ids = tok(token, add_special_tokens=False)["input_ids"] if token else [tok.eos_token_id]
    assert len(ids) == 1, f"{token!r} is not one token of this tokenizer"
    with torch.no_grad():
        norm = model.gpt_neox.final_layer_norm
        norm.weight.zero_()
        norm.bias.copy_(torch.linspace(-1, 1, norm.bias.numel()))
        head = model.get_output_embeddings().weight
        head.zero_()
        head[ids[0]] = norm.bias * 10
    model.save_pretrained(dst, safe_serialization=True)
    if chat_template:
        install_template(tok, chat_template)
        tok.save_pretrained(dst)
    return dst


def _korean_token(model_dir: Path) -> str:
    """A vocabulary entry that decodes to two or more Hangul syllables and encodes back to itself."""
    from kotune.models.load import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    for i in range(len(tok)):
        text = tok.decode([i])
        if re.fullmatch(r"[가-힣]{2,}", text) and tok(text, add_special_tokens=False)["input_ids"] == [i]:
            return text
    raise AssertionError("no Korean token in the tiny tokenizer")


@pytest.fixture(scope="module")
def rigged(tiny_neox, tmp_path_factory):
    root = tmp_path_factory.mktemp("rigged")
    word = _korean_token(tiny_neox)
    return {"looper": _rig(tiny_neox, root / "looper", word, "ko_chat"), "stopper": _rig(tiny_neox, root / "stopper", None, None),
            "word": word}


def test_generate_flags_the_loop_and_passes_the_stop(rigged, tmp_path):
    from kotune.eval.config import GenerateConfig
    from kotune.eval.generate_eval import run

    out = tmp_path / "eval"
    data = run(GenerateConfig(model=str(rigged["looper"]), baselines=[str(rigged["stopper"])],
                              max_new_tokens=MAX_NEW_TOKENS, limit=6, batch_size=4, out=str(out)))

    looper, stopper = data["models"]
    assert looper["summary"]["stop_rate"] == 0.0 and looper["summary"]["loop_rate"] == 1.0
    assert stopper["summary"]["stop_rate"] == 1.0 and stopper["summary"]["loop_rate"] == 0.0
    # the looper's tokenizer carries a chat template; the stopper's does not, and the report must say so
    assert looper["template_note"] is None and "ko_chat" in stopper["template_note"]

    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12 and {r["model"] for r in rows} == {"looper", "stopper"}
    for r in rows:
        if r["model"] == "looper":
            assert r["output"] == rigged["word"] * MAX_NEW_TOKENS
            assert r["n_tokens"] == MAX_NEW_TOKENS and not r["stopped"] and r["looping"]
        else:
            assert r["output"] == "" and r["n_tokens"] == 0 and r["stopped"] and not r["looping"]
    assert rows[0]["messages"] == [{"role": "user", "content": "시카고 오헤어 국제공항은 어디에 있어?"}]

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| looper | 6 | 0.00 | 6/6 |" in report
    assert "| stopper (baseline) | 6 | 1.00 | 0/6 |" in report
    assert "LOOPING" in report and "Looping replies of looper: facts-01" in report
    assert (out / "generation.png").stat().st_size > 5000


def test_engine_renders_the_models_own_chat_template(rigged):
    """The prompt the engine feeds is the tokenizer's chat template with the generation prompt, byte for byte."""
    from kotune.eval.generate_eval import engine_generate
    from kotune.models.generate import Engine

    engine = Engine.load(str(rigged["looper"]), max_batch_size=2)
    try:
        chat = [{"role": "user", "content": "안녕?"}]
        expected = engine.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert expected.endswith("### 어시스턴트:\n")
        assert engine.tokenizer.decode(engine.encode_chat(chat)) == expected
        (text, eos, n), = engine_generate(engine)([chat], 5)
        assert (text, eos, n) == (rigged["word"] * 5, False, 5)
    finally:
        engine.close()


def test_cli_generate(rigged, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("안녕?\n오늘 날씨 어때?\n", encoding="utf-8")
    out = tmp_path / "eval"
    result = subprocess.run([sys.executable, "-m", "kotune.cli", "eval", "generate", str(rigged["looper"]),
                             "--prompts", str(prompts), "--max-new-tokens", "24", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "looping replies: 1, 2" in result.stdout
    assert len((out / "generations.jsonl").read_text(encoding="utf-8").splitlines()) == 2
