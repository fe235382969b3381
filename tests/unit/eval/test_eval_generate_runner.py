"""`kotune eval generate` without a model: the prompt files it accepts and the runner behind the GenerateFn seam."""

import json

import pytest

from kotune.eval.generate_eval import DEFAULT_PROMPTS, Prompt, load_prompts, run_checks

LOOP = "시카고 오헤어 국제공항은 미국 일리노이주 시카고에 위치해 있습니다. " * 8
CLEAN = "시카고 오헤어 국제공항은 미국 일리노이주 시카고 북서쪽, 도심에서 약 25km 떨어진 곳에 있습니다."


def test_shipped_prompt_set():
    prompts = load_prompts(DEFAULT_PROMPTS)
    assert len(prompts) == 50
    assert len({p.id for p in prompts}) == 50
    categories = {p.category for p in prompts}
    assert categories == {"facts", "how-to", "rewriting", "translation", "coding", "chit-chat", "reasoning"}
    assert all(p.messages[-1]["role"] == "user" and p.messages[-1]["content"].strip() for p in prompts)
    assert any(len(p.messages) > 1 for p in prompts), "multi-turn prompts exercise the chat template"


def test_prompt_file_formats(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "안녕?"}\n\n{"id": "a", "instruction": "요약해 줘", "input": "긴 글"}\n'
                     '{"messages": [{"role": "system", "content": "짧게"}, {"role": "user", "content": "하이"}]}\n',
                     encoding="utf-8")
    p = load_prompts(jsonl)
    assert [x.id for x in p] == ["1", "a", "3"]
    assert p[1].messages == [{"role": "user", "content": "요약해 줘\n\n긴 글"}]
    assert p[2].messages[0]["role"] == "system"

    js = tmp_path / "p.json"
    js.write_text(json.dumps(["첫째", {"prompt": "둘째", "category": "x"}], ensure_ascii=False), encoding="utf-8")
    assert [x.messages[0]["content"] for x in load_prompts(js)] == ["첫째", "둘째"]

    txt = tmp_path / "p.txt"
    txt.write_text("\ufeff하나\n\n둘\n", encoding="utf-8")  # a BOM, as in KoChatGPT's seed file
    assert [x.messages[0]["content"] for x in load_prompts(txt)] == ["하나", "둘"]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a"}\n{"text": "b"}', r"p.jsonl:2: record: expected a \"prompt\""),
    ('{"prompt": "a"}\n{bad', r"p.jsonl:2: json: Expecting property name"),
    ('{"prompt": 3}\n' + "[" * 5000 + '\n{"prompt": "  "}', r"(?s)p.jsonl:1: record: .*p.jsonl:2: json: nested .*p.jsonl:3: prompt"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
     r"p.jsonl:1: messages: the last turn must be the user's"),
    ('{"messages": [{"role": "bot", "content": "q"}]}', r"p.jsonl:1: messages\[0\]"),
    ('{"prompt": "  "}', r"p.jsonl:1: prompt: the prompt is empty"),
    ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}', r"ids must be unique; repeated: 1"),
])
def test_prompt_errors_name_file_line_and_field(tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_prompts(f)


def test_runner_flags_the_looping_reply_and_passes_the_clean_one():
    prompts = [Prompt(id=f"p{i}", messages=[{"role": "user", "content": f"질문 {i}"}]) for i in range(5)]
    calls = []

    def generate(chats, max_new_tokens):
        calls.append((len(chats), max_new_tokens))
        # p1 loops until the limit; every other prompt gets a clean reply that ends with EOS
        return [(LOOP, False, max_new_tokens) if c[-1]["content"] == "질문 1" else (CLEAN, True, 30) for c in chats]

    rows, checks = run_checks(prompts, generate, max_new_tokens=64, batch_size=2)
    assert calls == [(2, 64), (2, 64), (1, 64)]  # batches of batch_size, in order
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    looping = {r["id"]: r["looping"] for r in rows}
    assert looping == {"p0": False, "p1": True, "p2": False, "p3": False, "p4": False}
    assert rows[1]["stopped"] is False and rows[1]["n_tokens"] == 64 and rows[1]["output"] == LOOP
    assert rows[0]["stopped"] is True and rows[0]["n_chars"] == len(CLEAN)
    assert [c.looping for c in checks] == [r["looping"] for r in rows]


def test_runner_rejects_a_generate_that_drops_replies():
    prompts = [Prompt(id="a", messages=[{"role": "user", "content": "q"}])] * 2
    with pytest.raises(RuntimeError, match="1 replies for 2 prompts"):
        run_checks(prompts, lambda chats, n: [("x", True, 1)], max_new_tokens=8)
