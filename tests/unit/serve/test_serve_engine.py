"""The generation engine: batched decoding gives the same tokens as plain `generate`, requests join and leave
between steps, each request keeps its own sampling, stops and cancellation, and streamed text is always whole."""

from __future__ import annotations

import queue
import time
from dataclasses import replace

import pytest
import torch
from kotune_test_paths import single_torch_thread

from kotune.models.generate import Engine, EngineBusy, SamplingParams
from kotune.models.text_stream import TextStream

GREEDY = dict(temperature=0, ignore_eos=True)


def reference(model, ids: list[int], n: int, **kw) -> list[int]:
    """Greedy tokens from plain transformers `generate`, EOS suppressed so exactly n come back."""
    with single_torch_thread():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=n, **kw)
    return out[0, len(ids):].tolist()


def submit_recording(engine, ids, params):
    """Submit a request; returns (handle, queue of its Outputs)."""
    q: queue.Queue = queue.Queue()
    return engine.submit(ids, params, q.put), q


def drain(q: queue.Queue, timeout: float = 60):
    outs = []
    while not (outs and outs[-1].finished):
        outs.append(q.get(timeout=timeout))
    return outs


def tokens_of(engine, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(params=["llama", "gpt-neox"])
def engine_and_reference(request, engine, reference_model, chat_model_neox):
    """The shared LLaMA engine, or a GPT-NeoX one (polyglot-ko's architecture) with its own reference copy."""
    if request.param == "llama":
        yield engine, reference_model
        return
    from transformers import AutoModelForCausalLM

    eng = Engine.load(str(chat_model_neox), max_batch_size=4, threads=1, device="cpu")
    yield eng, AutoModelForCausalLM.from_pretrained(chat_model_neox).eval()
    eng.close()


def test_requests_joining_mid_decode_match_plain_generate(engine_and_reference):
    engine, reference_model = engine_and_reference
    prompts = {
        "a": engine.encode_chat([{"role": "user", "content": "안녕하세요"}]),
        "long": engine.encode_chat([{"role": "user", "content": "한국어 언어 모델을 채팅 모델로 바꾸는 방법을 " * 4}]),
        "short": engine.encode_chat([{"role": "user", "content": "김치"}]),
    }
    n = {"a": 60, "long": 12, "short": 12}
    handle_a, qa = submit_recording(engine, prompts["a"], SamplingParams(max_new_tokens=n["a"], **GREEDY))
    first = [qa.get(timeout=60) for _ in range(3)]  # a is decoding: the others must join its batch
    assert not any(o.finished for o in first)
    late = {k: submit_recording(engine, prompts[k], SamplingParams(max_new_tokens=n[k], **GREEDY))[1]
            for k in ("long", "short")}
    outs = {"a": first + drain(qa), **{k: drain(q) for k, q in late.items()}}
    for key, ids in prompts.items():
        text = "".join(o.text for o in outs[key])
        assert outs[key][-1].finish_reason == "length"
        assert outs[key][-1].completion_tokens == n[key]
        want = engine.tokenizer.decode(reference(reference_model, ids, n[key]), skip_special_tokens=True)
        assert text == want, key


def test_concurrent_requests_share_forward_passes(chat_model):
    from kotune.models.load import load_model, load_tokenizer

    model = load_model(str(chat_model))
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(1))
    eng = Engine(model, load_tokenizer(str(chat_model)), max_batch_size=4, threads=1)
    try:
        prompts = [eng.encode_chat([{"role": "user", "content": q}]) for q in ("하나", "둘", "셋", "넷")]
        outs = eng.complete_many(prompts, SamplingParams(max_new_tokens=10, **GREEDY))
    finally:
        eng.close()
    assert [o.completion_tokens for o in outs] == [10] * 4
    # one after another: 4 x 10 = 40 forward passes. Batched: 1-4 prefills + 9 shared decode steps, plus a few
    # more if a busy machine staggers the submissions
    assert len(calls) <= 20, len(calls)


def test_streamed_text_never_splits_a_character(engine):
    text = "뷁 똠얌꿍 햏 안녕하세요"  # rare syllables: byte-level BPE splits them into several tokens
    ids = tokens_of(engine, text)
    pieces = [engine.tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in piece for piece in pieces), "precondition: some token is half a character"
    stream = TextStream(engine.tokenizer)
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_stop_string_is_cut_and_never_streamed_in_part(engine):
    ids = tokens_of(engine, "안녕하세요 반갑습니다 또 만나요")
    stream = TextStream(engine.tokenizer, stop=("반갑습니다",))
    deltas = []
    for i in ids:
        deltas.append(stream.push(i))
        if stream.stopped:
            break
    assert stream.stopped
    assert "".join(deltas) == "안녕하세요 "
    assert not any("반" in d for d in deltas)


def test_stop_strings_end_a_request(engine):
    ids = engine.encode_chat([{"role": "user", "content": "오늘 날씨는 어때요?"}])
    full = engine.complete(ids, SamplingParams(max_new_tokens=30, **GREEDY)).text
    stop = next(full[i : i + 2] for i in range(4, len(full)) if full[i : i + 2].isalpha())
    out = engine.complete(ids, SamplingParams(max_new_tokens=30, stop=("zzzz", stop), **GREEDY))
    assert out.finish_reason == "stop"
    assert out.text == full[: full.find(stop)]


def test_eos_stops_generation_unless_ignored(chat_model):
    from kotune.models.load import load_model, load_tokenizer

    model, tok = load_model(str(chat_model)), load_tokenizer(str(chat_model))
    calls = {"n": 0}

    def eos_on_fifth_step(module, args, logits):
        calls["n"] += 1
        if calls["n"] % 5 == 0:  # the 5th forward of each request: prefill + 4 decode steps
            logits[..., tok.eos_token_id] = 1e4
        return logits

    model.get_output_embeddings().register_forward_hook(eos_on_fifth_step)
    eng = Engine(model, tok, max_batch_size=1, threads=1)
    try:
        ids = eng.encode_chat([{"role": "user", "content": "안녕"}])
        out = eng.complete(ids, SamplingParams(max_new_tokens=20, temperature=0))
        assert (out.finish_reason, out.completion_tokens) == ("stop", 4)
        calls["n"] = 0
        out = eng.complete(ids, SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True))
        assert (out.finish_reason, out.completion_tokens) == ("length", 20)
    finally:
        eng.close()


def test_same_seed_same_reply_and_rows_keep_their_own_params(engine):
    ids = engine.encode_chat([{"role": "user", "content": "이야기를 들려주세요"}])
    sampled = SamplingParams(max_new_tokens=20, temperature=1.0, seed=7, ignore_eos=True)
    greedy = SamplingParams(max_new_tokens=20, **GREEDY)
    alone = engine.complete(ids, sampled).text
    # in one batch: a greedy row and two sampled rows with different seeds
    handles = [submit_recording(engine, ids, p)[1] for p in (sampled, greedy, replace(sampled, seed=8))]
    texts = ["".join(o.text for o in drain(q)) for q in handles]
    assert texts[0] == alone
    assert texts[1] == engine.complete(ids, greedy).text
    assert texts[2] != texts[0]


@pytest.mark.parametrize("narrow", [dict(top_k=1), dict(top_p=1e-6)])
def test_top_k_1_and_tiny_top_p_are_greedy(engine, narrow):
    ids = engine.encode_chat([{"role": "user", "content": "한국의 수도는?"}])
    greedy = engine.complete(ids, SamplingParams(max_new_tokens=15, **GREEDY)).text
    sampled = engine.complete(ids, SamplingParams(max_new_tokens=15, temperature=1.5, ignore_eos=True, **narrow))
    assert sampled.text == greedy


def test_repetition_penalty_matches_transformers(engine, reference_model):
    ids = engine.encode_chat([{"role": "user", "content": "반복"}])

    def ours(penalty: float) -> str:
        return engine.complete(ids, SamplingParams(max_new_tokens=30, repetition_penalty=penalty, **GREEDY)).text

    want = reference(reference_model, ids, 30, repetition_penalty=1.5)
    assert ours(1.5) == engine.tokenizer.decode(want, skip_special_tokens=True)
    assert ours(1.5) != ours(1.0), "precondition: the penalty changes this reply"


def test_cancel_stops_a_running_request(engine):
    ids = engine.encode_chat([{"role": "user", "content": "길게 말해 주세요"}])
    before = engine.stats()["cancelled"]
    handle, q = submit_recording(engine, ids, SamplingParams(max_new_tokens=1500, **GREEDY))
    q.get(timeout=60)
    handle.cancel()
    last = drain(q)[-1]
    assert last.finish_reason == "cancelled"
    assert last.completion_tokens < 1500
    assert engine.stats()["cancelled"] == before + 1
    _wait_idle(engine)


def test_full_queue_raises_engine_busy(chat_model):
    eng = Engine.load(str(chat_model), max_batch_size=1, max_waiting=1, threads=1, device="cpu")
    try:
        ids = eng.encode_chat([{"role": "user", "content": "안녕"}])
        long = SamplingParams(max_new_tokens=1500, **GREEDY)
        running, q = submit_recording(eng, ids, long)
        q.get(timeout=60)  # running: the batch (size 1) is full
        waiting, _ = submit_recording(eng, ids, long)
        with pytest.raises(EngineBusy, match="retry later"):
            eng.submit(ids, long, lambda out: None)
        # a request cancelled while waiting frees its place at once, though the batch is still busy
        cancelled = eng.stats()["cancelled"]
        waiting.cancel()
        deadline = time.monotonic() + 30
        while eng.stats()["cancelled"] == cancelled:
            assert time.monotonic() < deadline, eng.stats()
            time.sleep(0.01)
        assert eng.stats()["running"] == 1 and eng.stats()["waiting"] == 0
        eng.submit(ids, long, lambda out: None).cancel()
        running.cancel()
    finally:
        eng.close()


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(ValueError, match="maximum context length"):
        engine.submit([1] * (engine.max_context - 5), SamplingParams(max_new_tokens=10), lambda out: None)


@pytest.mark.parametrize("bad, field", [(dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"),
                                        (dict(max_new_tokens=0), "max_new_tokens"), (dict(stop=("",)), "stop")])
def test_bad_sampling_params_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**bad)


def test_tokenizer_without_template_falls_back_to_ko_chat_and_says_so(tiny_neox):
    eng = Engine.load(str(tiny_neox), max_batch_size=1, threads=1, device="cpu")
    try:
        assert eng.template_note and "ko_chat" in eng.template_note
        text = eng.tokenizer.decode(eng.encode_chat([{"role": "user", "content": "안녕"}]))
        assert text == "### 사용자:\n안녕\n\n### 어시스턴트:\n"
    finally:
        eng.close()


def test_lora_adapter_folder_is_served_merged(chat_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(chat_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(tmp_path)
    eng = Engine.load(str(tmp_path), max_batch_size=2, threads=1, device="cpu")
    try:
        ids = eng.encode_chat([{"role": "user", "content": "안녕"}])
        out = eng.complete(ids, SamplingParams(max_new_tokens=10, **GREEDY))
        want = reference(peft_model.eval(), ids, 10)
        assert out.text == eng.tokenizer.decode(want, skip_special_tokens=True)
    finally:
        eng.close()


def _wait_idle(engine, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats()["running"] or engine.stats()["waiting"]:
        assert time.monotonic() < deadline, engine.stats()
        time.sleep(0.01)
