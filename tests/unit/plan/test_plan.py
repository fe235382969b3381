"""`kotune plan`: shipped configs, accounting properties, the command's verdicts and suggestions, README's table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotune.cli import main
from kotune.plan.memory import ENGINES, GIB, Job, estimate
from kotune.plan.report import markdown_table, usable_bytes
from kotune.plan.shapes import load_config_dict, model_shape, shipped_models
from kotune_test_paths import REPO


def test_shipped_configs_hold_the_published_shapes():
    expected = {  # hidden, layers, heads, kv heads, intermediate, vocab, max positions
        "EleutherAI/polyglot-ko-1.3b": (2048, 24, 16, 16, 8192, 30080, 2048),
        "EleutherAI/polyglot-ko-5.8b": (4096, 28, 16, 16, 16384, 30080, 2048),
        "EleutherAI/polyglot-ko-12.8b": (5120, 40, 40, 40, 20480, 30080, 2048),
        "42dot/42dot_LLM-PLM-1.3B": (2048, 24, 32, 32, 5632, 50304, 4096),
    }
    assert shipped_models() == sorted(expected)
    for name, values in expected.items():
        raw = load_config_dict(name)
        shape = model_shape(name)
        assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab,
                raw["max_position_embeddings"]) == values, name
        assert raw["tie_word_embeddings"] is False
    assert load_config_dict("EleutherAI/polyglot-ko-1.3b")["rotary_pct"] == 0.5
    # Parameter counts on the meta device equal the model cards' (polyglot-ko-1.3b, -5.8b n_parameters).
    assert model_shape("EleutherAI/polyglot-ko-1.3b").params == 1_331_810_304
    assert model_shape("EleutherAI/polyglot-ko-5.8b").params == 5_885_059_072
    assert model_shape("beomi/polyglot-ko-12.8b-safetensors").params == model_shape("EleutherAI/polyglot-ko-12.8b").params


def test_a_model_the_planner_cannot_resolve_is_named_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="model=<base hub id or folder>"):
        model_shape(str(tmp_path / "runs" / "not-trained"))


SHAPE = None


def _shape():
    global SHAPE
    SHAPE = SHAPE or model_shape("EleutherAI/polyglot-ko-1.3b")
    return SHAPE


@settings(max_examples=40, deadline=None)
@given(micro=st.integers(1, 16), length=st.sampled_from([128, 512, 2048]), gpus=st.sampled_from([2, 4, 8]),
       method=st.sampled_from(["full", "lora", "qlora"]), precision=st.sampled_from(["bf16", "fp32"]))
def test_accounting_moves_the_way_each_change_should(micro, length, gpus, method, precision):
    job = Job(_shape(), method, micro, length, precision, checkpointing=False)
    ckpt = Job(_shape(), method, micro, length, precision, checkpointing=True)
    bigger = Job(_shape(), method, micro + 1, length, precision, checkpointing=False)
    for engine in ENGINES:
        plain = estimate(job, engine, gpus)
        if plain is None:
            assert method == "qlora" and engine not in ("single", "ddp")
            continue
        assert estimate(ckpt, engine, gpus).peak <= plain.peak
        assert estimate(bigger, engine, gpus).peak > plain.peak
        assert all(v >= 0 for v in plain.components.values())
    for engine in ("fsdp2", "zero3"):
        if method != "qlora":  # sharding over more GPUs never costs memory per GPU
            assert estimate(job, engine, gpus * 2).peak <= estimate(job, engine, gpus).peak
    full = estimate(Job(_shape(), "full", micro, length, precision), "single")
    assert estimate(Job(_shape(), "lora", micro, length, precision), "single").peak < full.peak


def test_full_fine_tuning_states_are_the_known_bytes_per_parameter():
    shape = _shape()
    est = estimate(Job(shape, "full", 1, 128, "bf16"), "single")
    # fp32 weights + fp32 gradients + two fp32 AdamW moments = 16 bytes per parameter.
    assert est.components["weights"] + est.components["gradients"] + est.components["optimizer"] == 16 * shape.params
    zero3 = estimate(Job(shape, "full", 1, 128, "bf16"), "zero3", 8)
    assert zero3.components["optimizer"] == 12 * shape.params / 8  # fp32 master + moments, partitioned


def test_plan_command_verdict_suggestions_and_json(capsys):
    recipe = str(REPO / "recipes/sft/polyglot-ko-12.8b_lora.yaml")
    assert main(["plan", recipe, "--gpus", "1", "--gpu-memory", "24"]) == 1
    out = capsys.readouterr().out
    assert "does not fit on one 24 GiB GPU" in out and "fits with method=qlora" in out
    assert main(["plan", recipe, "--gpus", "1", "--gpu-memory", "24", "--json"]) == 1
    plan = json.loads(capsys.readouterr().out)[0]
    assert plan["fits_with"] == [] and plan["suggestions"]
    for s in plan["suggestions"]:  # every suggestion was itself computed to fit
        assert s["peak_gib"] * GIB <= usable_bytes(24) + 0.05 * GIB
    assert main(["plan", recipe, "method=qlora", "--gpu-memory", "24"]) == 0
    assert "fits on one 24 GiB GPU" in capsys.readouterr().out


def test_pipeline_recipe_is_planned_stage_by_stage(capsys):
    assert main(["plan", str(REPO / "recipes/chatkoalpaca.yaml"), "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert [p["title"].split()[0] for p in plans] == ["sft", "reward", "ppo"]
    assert {p["model"] for p in plans} == {"EleutherAI/polyglot-ko-1.3b"}
    assert plans[2]["engines"]["ddp"] is None  # kotune's PPO runs on one device


def test_readme_table_is_what_the_planner_prints_now():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- memory-table: scripts/memory_table.py -->\n", "\n<!-- /memory-table -->"
    assert begin in readme and end in readme
    shown = readme.split(begin, 1)[1].split(end, 1)[0]
    assert shown == markdown_table(), "README's memory table is stale: run scripts/memory_table.py and paste its output"


def test_plan_help_does_not_import_torch():
    code = "import sys; from kotune.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_pretraining_from_init_takes_the_vocabulary_of_its_tokenizer(tiny_neox, capsys):
    # tiny_ko.yaml's first line chains `kotune tokenizer train ... && kotune pretrain ...`: pretrain is planned.
    recipe = str(REPO / "recipes/pretrain/tiny_ko.yaml")
    assert main(["plan", recipe, f"tokenizer={tiny_neox}", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)[0]
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tiny_neox))
    hidden, layers = 128, 2  # the recipe's init section
    assert plan["title"].startswith("pretrain") and "16 x 256 tokens" in plan["setting"]
    embeddings = 2 * vocab * hidden  # untied input and output embeddings
    assert plan["parameters"] > embeddings and plan["parameters"] < embeddings + layers * 13 * hidden**2
    assert main(["plan", recipe, "tokenizer=runs/no-such-tokenizer"]) == 1
    assert "tokenizer: folder runs/no-such-tokenizer does not exist" in capsys.readouterr().err
