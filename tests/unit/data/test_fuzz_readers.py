"""Bad input never crashes a reader: seeded random mutations of the shipped Korean samples.

Each file is a slice of a shipped sample (instruction, preference, prompt, seed, eval-prompt, conversation-log and
corpus files, and a recipe) with one to three mutations: flipped bytes, truncation, deep nesting, duplicated,
swapped or deleted lines, BOM/CRLF/blank lines, invalid UTF-8, wrong types at any depth, NaN, lone surrogates,
enormous fields and lines. Every reader kotune has for user files runs on every file, in-process: each must
return or raise a ValueError naming the file (the CLI prints it and exits 1), never anything else, and a file
any reader accepts must really hold valid records, checked by an independent strict reader.
"""

import contextlib
import io
import json
import random
import re
import shutil

import pytest

from kotune.cli import main
from kotune.config import load_config
from kotune.data import records as records_module
from kotune.data.corpus import iter_documents
from kotune.data.loading import load_examples
from kotune.eval.generate_eval import DEFAULT_PROMPTS, load_prompts
from kotune.selfinstruct.output import read_accepted
from kotune.selfinstruct.prompt import load_header
from kotune.selfinstruct.seeds import load_seed_tasks
from kotune.sft.config import SFTConfig
from kotune_test_paths import REPO, SAMPLES

FILES_PER_BASE = 24  # x 15 bases = 360 files
# Lines are bounded at 64 KiB here (MAX_RECORD_BYTES is 16 MiB) so that "enormous line" mutations stay cheap;
# test_records_limits checks the real limits once.
LINE_LIMIT = 64 * 1024


def _jsonl(recs):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)


def _array(recs):
    return json.dumps(recs, ensure_ascii=False, indent=1) + "\n"


def _bases():
    """name -> (file name, records or None, writer, kind)."""
    koalpaca = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:12]
    vaiv = [r for r in json.loads((SAMPLES / "vaiv_preference.sample.json").read_text(encoding="utf-8"))
            if VALID["preference"](r)][:6]  # the sample holds a few invalid pairs; start from valid ones
    ppo = json.loads((SAMPLES / "kochatgpt_ppo_prompts.sample.json").read_text(encoding="utf-8"))[:12]
    seeds = [json.loads(l) for l in (REPO / "data/seeds/ko_seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()[:8]]
    prompts = [json.loads(l) for l in DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines()[:8]]
    log = (SAMPLES / "kochatgpt_conversation.sample.txt").read_text(encoding="utf-8").split("\n")[:40]
    corpus = (SAMPLES / "chatbotdata_ko.txt").read_text(encoding="utf-8").split("\n")[:30]
    recipe = (REPO / "recipes/sft/quickstart_tiny.yaml").read_text(encoding="utf-8")
    # The other formats, built from the same Korean records.
    pairs = [(r["instruction"], r["output"]) for r in koalpaca[:8]]
    sharegpt = [{"conversations": [{"from": "system", "value": "친절하게"}, {"from": "human", "value": q},
                                   {"from": "gpt", "value": a}]} for q, a in pairs]
    openai = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    rm = [{"prompt": q, "completion_0": a, "completion_1": a[: len(a) // 2] + "…", "completion_2": "모르겠어요",
           "ranking": [0, 1, 2]} for q, a in pairs]
    v11 = [{"instruction": q, "output": a, "url": "https://kin.naver.com/qna"} for q, a in pairs]
    sft = [{"prompt": q, "completion": a, "tokens": len(a)} for q, a in pairs]
    chat_prefs = [{"prompt": [{"role": "user", "content": q}], "chosen": a, "rejected": "모르겠어요"} for q, a in pairs]
    return {
        "sharegpt": ("s.jsonl", sharegpt, _jsonl, "sft"),
        "openai": ("o.json", openai, _array, "sft"),
        "kochatgpt_rm": ("rm.jsonl", rm, _jsonl, "preference"),
        "koalpaca_v11": ("v11.json", v11, lambda r: json.dumps(r, ensure_ascii=False), "sft"),
        "kochatgpt_sft": ("k.jsonl", sft, _jsonl, "sft"),
        "chat_preference": ("cp.jsonl", chat_prefs, _jsonl, "preference"),
        "alpaca_array": ("a.json", koalpaca, _array, "sft"),
        "alpaca_lines": ("a.jsonl", koalpaca, _jsonl, "sft"),
        "preference": ("p.json", vaiv, _array, "preference"),
        "ppo_prompts": ("q.json", ppo, lambda r: json.dumps(r, ensure_ascii=False), "prompts"),
        "seeds": ("seeds.jsonl", seeds, _jsonl, "sft"),
        "eval_prompts": ("prompts.jsonl", prompts, _jsonl, "prompts"),
        "conversation_log": ("log.txt", "\n".join(log) + "\n", None, "sft"),
        "corpus": ("corpus.txt", "\n".join(corpus) + "\n", None, "sft"),
        "recipe": ("recipe.yaml", recipe, None, "sft"),
    }


WRONG = [0, -1.5, None, True, [], {}, [[1]], {"a": {"b": []}}, "", " \u200b ", 10**30]


def _mutate_value(recs, rng):
    """Replace one value at any depth with a wrong type, a huge string, NaN or a lone surrogate."""
    holder, key = recs, rng.randrange(len(recs))
    while isinstance(holder[key], (dict, list)) and holder[key] and rng.random() < 0.8:
        holder = holder[key]
        key = rng.choice(list(holder)) if isinstance(holder, dict) else rng.randrange(len(holder))
    holder[key] = rng.choice(WRONG) if rng.random() < 0.6 else rng.choice([
        "가" * 200_001, "x" * (LINE_LIMIT + 10), float("nan"), "\ud800 끊긴 문자",
        json.loads("[" * 120 + "]" * 120),
    ])
    return recs


def _mutate_bytes(data: bytes, rng) -> bytes:
    lines = data.split(b"\n")
    op = rng.choice(["flip", "truncate", "nest", "dup", "swap", "delete", "bom_crlf", "blank", "utf8", "cr"])
    if op == "flip" and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
        return bytes(b)
    if op == "truncate":
        return data[: rng.randrange(len(data) + 1)]
    if op == "nest":
        at = rng.randrange(len(lines))
        lines.insert(at, b"[" * rng.choice([5, 150, 3000]) + rng.choice([b"", b"{", b'"a"']))
    elif op == "dup":
        lines.insert(rng.randrange(len(lines)), rng.choice(lines))
    elif op == "swap" and len(lines) > 1:
        i, j = rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "delete" and len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    elif op == "bom_crlf":
        return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
    elif op == "blank":
        lines.insert(rng.randrange(len(lines) + 1), rng.choice([b"", b"  ", b"\t"]))
    elif op == "utf8" and data:
        at = rng.randrange(len(data))
        return data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe4\xb8"]) + data[at:]
    elif op == "cr":
        return data.replace(b"\n", b"\r", rng.randint(1, 3))
    return b"\n".join(lines)


def mutated(base: str, seed: int) -> tuple[str, bytes]:
    name, content, writer, _ = BASES[base]
    rng = random.Random(f"{base}-{seed}")
    if writer is not None and rng.random() < 0.6:
        content = json.loads(json.dumps(content))
        for _ in range(rng.randint(1, 3)):
            _mutate_value(content, rng)
    data = (writer(content) if writer else content).encode("utf-8", "surrogatepass")
    for _ in range(rng.choice([0, 1, 1, 2, 3]) if writer is not None else rng.randint(1, 3)):
        data = _mutate_bytes(data, rng)
    return name, data


# ------------------------------------------------------------------ the independent strict reader


def _reject(name):
    raise ValueError(name)


def strict_records(data: bytes) -> list:
    """The records of a JSON array or JSON Lines file, by the standard library and nothing of kotune's."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    if text.lstrip(" \t\r\n").startswith("["):
        recs = json.loads(text, parse_constant=_reject)
    else:
        recs = [json.loads(l, parse_constant=_reject) for l in re.split(r"\r\n|\r|\n", text) if l.strip(" \t")]
    json.dumps(recs, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    assert isinstance(recs, list) and recs
    return recs


def _text(rec, key, optional=False):
    value = rec.get(key)
    if optional and value is None:
        return True
    return isinstance(value, str) and bool(re.sub("[\u200b\u200c\u200d\u2060\ufeff]", "", value).strip())


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "bot": "assistant", "system": "system"}
OPENAI_ROLES = {r: r for r in ("system", "user", "assistant")}


def _roles(turns, role_key, text_key, roles):
    """The roles of a list of turns, or None if a turn is not an object with a known role and non-blank text."""
    if not isinstance(turns, list):
        return None
    out = []
    for t in turns:
        if not isinstance(t, dict) or not isinstance(t.get(role_key), str) or t[role_key] not in roles or not _text(t, text_key):
            return None
        out.append(roles[t[role_key]])
    return out


def _chat(turns, role_key, text_key, roles):
    seq = _roles(turns, role_key, text_key, roles)
    if seq is None:
        return False
    seq = seq[1:] if seq and seq[0] == "system" else seq
    return bool(seq) and seq[-1] == "assistant" and all(r == ("user", "assistant")[i % 2] for i, r in enumerate(seq))


def _prompt(r):
    if isinstance(r.get("prompt"), list):
        seq = _roles(r["prompt"], "role", "content", OPENAI_ROLES)
        return bool(seq) and seq[-1] == "user"
    return _text(r, "prompt")


def _ranked(r):
    keys = [k for k in r if re.fullmatch(r"completion_\d+", k)]
    ranking = r.get("ranking")
    return (_prompt(r) and len(keys) >= 2 and all(_text(r, k) for k in keys) and isinstance(ranking, list)
            and len(ranking) == len(keys) and all(isinstance(x, int) for x in ranking))


VALID = {
    "alpaca": lambda r: _text(r, "instruction") and _text(r, "output") and (r.get("input") is None or isinstance(r["input"], str)),
    "koalpaca_v1.1": lambda r: _text(r, "instruction") and _text(r, "output"),
    "kochatgpt_sft": lambda r: _text(r, "prompt") and _text(r, "completion"),
    "preference": lambda r: _prompt(r) and _text(r, "chosen") and _text(r, "rejected") and r["chosen"].strip() != r["rejected"].strip(),
    "prompts": lambda r: _text(r, "prompt"),
    "sharegpt": lambda r: _chat(r.get("conversations"), "from", "value", SHAREGPT_ROLES),
    "openai": lambda r: _chat(r.get("messages"), "role", "content", OPENAI_ROLES),
    "kochatgpt_rm": _ranked,
}


BASES = _bases()


# ------------------------------------------------------------------ running every reader


def run_cli(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def call(reader, path):
    """(True, result) or (False, message): only a ValueError that names the file is an allowed failure."""
    try:
        return True, reader()
    except ValueError as e:  # DataError, ConfigError: what the CLI prints as one line and exit 1
        assert str(path) in str(e), f"error does not name the file: {e}"
        assert "Traceback" not in str(e)
        return False, str(e)


def check_file(path, data: bytes, kind: str, tmp_path) -> None:
    code, output = run_cli(["data", "check", str(path)])
    assert code in (0, 1), output
    if code == 1:
        assert re.search(re.escape(str(path)) + r":\d+", output), output
    else:
        fmt = output.split("\n")[0].rsplit(": ", 1)[1]
        if fmt != "kochatgpt_conversation":
            recs = strict_records(data)
            assert all(isinstance(r, dict) and VALID[fmt](r) for r in recs), fmt
            assert f"{len(recs):,} records -> {len(recs):,}" in output or fmt == "kochatgpt_rm"
        else:
            assert "<<start conversation>>" in data.decode("utf-8")

    code, output = run_cli(["data", "dedup", str(path), "--out", str(tmp_path / "dedup.jsonl")])
    assert code in (0, 1), output
    if code == 0:
        kept = strict_records((tmp_path / "dedup.jsonl").read_bytes()) if (tmp_path / "dedup.jsonl").stat().st_size else []
        assert len(kept) <= len(strict_records(data))
    else:
        assert str(path) in output

    call(lambda: load_examples([str(path)], kind=kind, skip_invalid=True), path)
    ok, tasks = call(lambda: load_seed_tasks([str(path)]), path)
    if ok:
        assert all(_text(r, "instruction") for r in strict_records(data))
    ok, prompts = call(lambda: load_prompts(path), path)
    if ok and path.suffix in (".json", ".jsonl"):
        assert len(prompts) == len(strict_records(data))
    ok, docs = call(lambda: list(iter_documents([path])), path)
    if ok:
        data.decode("utf-8")
        if path.suffix != ".txt" or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"[", b"{")):
            strict_records(data)
    resume = tmp_path / "resume.jsonl"
    shutil.copyfile(path, resume)
    ok, accepted = call(lambda: read_accepted(resume, log=lambda _: None), resume)
    if ok and accepted:
        assert strict_records(resume.read_bytes()) == accepted
    if path.suffix == ".yaml":
        call(lambda: load_config(SFTConfig, str(path)), path)
    call(lambda: load_header(str(path), 5), path)  # selfinstruct's prompt_file


@pytest.mark.parametrize("base", sorted(BASES))
def test_no_reader_crashes_on_mutated_samples(tmp_path, monkeypatch, base):
    monkeypatch.setattr(records_module, "MAX_RECORD_BYTES", LINE_LIMIT)
    for seed in range(FILES_PER_BASE):
        name, data = mutated(base, seed)
        path = tmp_path / f"{seed}-{name}"
        path.write_bytes(data)
        try:
            check_file(path, data, BASES[base][3], tmp_path)
        except Exception as e:
            raise AssertionError(f"{base} seed {seed} ({path}): {type(e).__name__}: {e}") from e


def test_records_limits(tmp_path):
    """The real bounds: a 50 MB line and a 200,000-character field are reported; the records around them are read."""
    from kotune.data.records import read_records

    good = json.dumps({"instruction": "좋아요", "input": "", "output": "네"}, ensure_ascii=False)
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.write(good + "\n")
        f.write('{"instruction": "' + "x" * 50_000_000 + '", "input": "", "output": "네"}\n')
        f.write(json.dumps({"instruction": "길어요", "input": "", "output": "가" * 200_000}, ensure_ascii=False) + "\n")
        f.write(good + "\n")
    raw = read_records(path)
    assert [r.index for r in raw.records] == [0, 3]
    assert [str(p) for p in raw.problems] == [
        f"{path}:2: record: line of 50,000,049 bytes, more than the 16,777,216 kotune reads as one record "
        "(see MAX_RECORD_BYTES); skipped unread",
        f"{path}:3: output: 200,000 characters, more than the 100,000 kotune reads in one field (see MAX_FIELD_CHARS)",
    ]
    assert raw.unreadable == 2
