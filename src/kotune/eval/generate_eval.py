"""`kotune eval generate MODEL`: generate replies to a Korean prompt set and check them (stop, repeat, loop).

The model is driven through one narrow seam, a `GenerateFn`:

    generate(prompts: list[list[dict]], max_new_tokens: int) -> list[(text, finished_with_eos, n_tokens)]

`run_checks` needs nothing else, so tests drive it with canned replies, and any engine can sit behind it. The
one used here is kotune's shared generation engine (`kotune.models.generate.Engine`, the same one behind chat
and the server): each prompt is rendered with the model's own chat template (`Engine.encode_chat`,
`add_generation_prompt=True`) and the batch is decoded together, greedy by default, until EOS or
`max_new_tokens`. A model without a chat template gets kotune's `ko_chat` template, and the report says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kotune.data.records import RecordError, decode_line, read_lines, read_records
from kotune.data.schema import DataError, Problem
from kotune.eval.config import GenerateConfig
from kotune.eval.generation_checks import DEFAULT_LOOP_RULE, LoopRule, ReplyCheck, check_reply, summarize
from kotune.eval.runs import (
    GENERATION_JSON,
    GENERATIONS_JSONL,
    default_out_dir,
    unique_labels,
    write_json,
)
from kotune.resources import resource_path

DEFAULT_PROMPTS = resource_path("prompts", "ko_generation_50.jsonl")
ROLES = ("system", "user", "assistant")

GenerateFn = Callable[[list[list[dict]], int], list[tuple[str, bool, int]]]
"""Replies to a batch of chats: (text, finished_with_eos, n_tokens) per chat, in order."""


@dataclass(frozen=True)
class Prompt:
    """One chat to reply to; `messages` ends with a user turn."""

    id: str
    messages: list[dict]
    category: str | None = None


# ------------------------------------------------------------------------------------------ prompts


def _prompt_from_record(rec, index: int) -> Prompt:
    """One prompt; raises RecordError naming the field that is wrong."""
    if isinstance(rec, str):
        rec = {"prompt": rec}
    if not isinstance(rec, dict):
        raise RecordError("record", f"expected an object with prompt or messages, or a string, got {type(rec).__name__}", "wrong_type")
    if "messages" in rec:
        messages = rec["messages"]
        if not isinstance(messages, list) or not messages:
            raise RecordError("messages", "expected a non-empty list of {role, content}", "wrong_type")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise RecordError(f"messages[{i}]", f"expected {{\"role\": {'|'.join(ROLES)}, \"content\": str}}", "wrong_type")
        if messages[-1]["role"] != "user":
            raise RecordError("messages", "the last turn must be the user's (the model writes the next one)", "turns")
    elif isinstance(rec.get("prompt"), str) or isinstance(rec.get("instruction"), str):
        key = "prompt" if isinstance(rec.get("prompt"), str) else "instruction"
        text = rec[key]
        if rec.get("input"):  # Alpaca-style records: the input follows the instruction, as kotune's templates do
            if not isinstance(rec["input"], str):
                raise RecordError("input", f"expected a string, got {type(rec['input']).__name__}", "wrong_type")
            text = f"{text}\n\n{rec['input']}"
        messages = [{"role": "user", "content": text}]
    else:
        raise RecordError("record", "expected a \"prompt\" (or \"instruction\") string or a \"messages\" list", "missing_field")
    if not messages[-1]["content"].strip():
        raise RecordError("prompt", "the prompt is empty", "empty")
    category = rec.get("category")
    if category is not None and not isinstance(category, str):
        raise RecordError("category", f"expected a string, got {type(category).__name__}", "wrong_type")
    pid = rec.get("id", index + 1)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise RecordError("id", f"expected a string or an integer, got {type(pid).__name__}", "wrong_type")
    return Prompt(id=str(pid), messages=messages, category=category)


def load_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a file: .jsonl (one object per line: `prompt`, `instruction` [+ `input`] or `messages`;
    optional `id`, `category`), .json (a list of such objects or of strings), anything else one prompt per line.

    Raises:
        DataError: listing every bad record as FILE:LINE: field: reason (a ValueError).
    """
    path = Path(path)
    prompts: list[Prompt] = []
    problems: list[Problem] = []
    if path.suffix in (".json", ".jsonl"):
        raw = read_records(path)
        problems.extend(raw.problems)
        if raw.layout == "text" and not raw.problems:
            problems.append(Problem(str(path), 1, "file", "expected a JSON list or JSON Lines of prompts", "format"))
        for rec in raw.records:
            try:
                prompts.append(_prompt_from_record(rec.value, rec.index))
            except RecordError as e:
                problems.append(Problem.at(rec.source, e.field, e.reason, e.kind))
    elif not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    else:
        with open(path, "rb") as f:
            for line in read_lines(f):
                try:
                    text = decode_line(line)
                except RecordError as e:
                    problems.append(Problem(str(path), line.number, e.field, e.reason, e.kind))
                    continue
                if text.strip():
                    prompts.append(Prompt(id=str(len(prompts) + 1), messages=[{"role": "user", "content": text.strip()}]))
    if problems:
        raise DataError(problems, "Fix these prompts (each needs a prompt/instruction string or a messages list).")
    if not prompts:
        raise ValueError(f"{path}: no prompts found")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: prompt ids must be unique; repeated: {', '.join(dup[:5])}")
    return prompts


# ------------------------------------------------------------------------------------------ runner


def run_checks(prompts: Sequence[Prompt], generate: GenerateFn, *, max_new_tokens: int, batch_size: int = 16,
               rule: LoopRule = DEFAULT_LOOP_RULE, desc: str = "generate") -> tuple[list[dict], list[ReplyCheck]]:
    """Generate a reply to every prompt, `batch_size` at a time, and check each.

    Returns:
        (rows, checks): one row per prompt ({id, category, messages, output, **checks}) and its ReplyCheck.
    """
    from tqdm.auto import tqdm

    rows: list[dict] = []
    checks: list[ReplyCheck] = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            replies = generate([p.messages for p in chunk], max_new_tokens)
            if len(replies) != len(chunk):
                raise RuntimeError(f"generate returned {len(replies)} replies for {len(chunk)} prompts")
            for p, (text, eos, n_tokens) in zip(chunk, replies):
                check = check_reply(text, eos, n_tokens, rule)
                checks.append(check)
                rows.append({"id": p.id, "category": p.category, "messages": p.messages, "output": text,
                             **check.to_dict()})
            bar.update(len(chunk))
    return rows, checks


def engine_generate(engine, *, temperature: float = 0.0, seed: int = 0) -> GenerateFn:
    """A GenerateFn over kotune's generation engine: chat template, batched decoding, stop at EOS.

    No stop strings are set, so the engine's finish reason "stop" means the model emitted EOS; "length" means it
    hit `max_new_tokens` (or the model's context).
    """
    from kotune.models.generate import SamplingParams

    def generate(chats: list[list[dict]], max_new_tokens: int) -> list[tuple[str, bool, int]]:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        outputs = engine.complete_many([engine.encode_chat(m) for m in chats], params)
        replies = []
        for out in outputs:
            if out.finish_reason == "error":
                raise RuntimeError(f"generation failed: {out.error}")
            replies.append((out.text, out.finish_reason == "stop", out.completion_tokens))
        return replies

    return generate


def evaluate_model(path: str, prompts: Sequence[Prompt], *, label: str, max_new_tokens: int, batch_size: int,
                   temperature: float, device: str | None, dtype: str,
                   trust_remote_code: bool = False) -> tuple[list[dict], list[ReplyCheck], str | None]:
    """Load `path` into the engine, run the checks; returns rows, checks and the engine's template note."""
    from kotune.models.generate import Engine

    engine = Engine.load(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                         max_batch_size=batch_size)
    try:
        rows, checks = run_checks(prompts, engine_generate(engine, temperature=temperature),
                                  max_new_tokens=max_new_tokens, batch_size=batch_size, desc=label)
    finally:
        engine.close()
    return rows, checks, engine.template_note


def run(cfg: GenerateConfig) -> dict:
    """Generate for every prompt with `cfg.model` (and each baseline), check the replies, write results and report.

    Args:
        cfg: the models, prompt file, decoding and loading options (see `GenerateConfig` for each field).

    Returns:
        The generation.json content: {"settings", "models": [{label, path, role, template_note, summary}]}.
    """
    from kotune.eval.report import generation_console_table, write_report

    prompts, max_new_tokens, temperature, baselines = (cfg.prompts or DEFAULT_PROMPTS, cfg.max_new_tokens,
                                                       cfg.temperature, cfg.baselines)
    items = load_prompts(prompts)[:cfg.limit]
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg.model)
    paths = [cfg.model, *baselines]
    started = time.time()
    all_rows: list[dict] = []
    entries = []
    for path, label, role in zip(paths, unique_labels(paths), ["model"] + ["baseline"] * len(baselines)):
        rows, checks, note = evaluate_model(path, items, label=label, max_new_tokens=max_new_tokens,
                                            batch_size=cfg.batch_size, temperature=temperature, device=cfg.device,
                                            dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        all_rows.extend({"model": label, **row} for row in rows)
        entries.append({"label": label, "path": str(path), "role": role, "template_note": note,
                        "summary": summarize([r["output"] for r in rows], checks),
                        "looping_ids": [r["id"] for r in rows if r["looping"]]})
    out.mkdir(parents=True, exist_ok=True)
    with (out / GENERATIONS_JSONL).open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rows)
    data = {
        "settings": {"prompts": str(prompts), "n_prompts": len(items), "max_new_tokens": max_new_tokens,
                     "temperature": temperature, "batch_size": cfg.batch_size, "loop_rule": asdict(DEFAULT_LOOP_RULE),
                     "seconds": round(time.time() - started, 1)},
        "models": entries,
    }
    write_json(out / GENERATION_JSON, data)
    print(generation_console_table(data))
    report = write_report(out)
    print(f"wrote {out / GENERATIONS_JSONL} and {report}")
    return data
