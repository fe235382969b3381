"""Preference pairs and prompts as token ids, rendered and masked exactly as SFT renders a conversation.

A pair's chosen (rejected) sequence is the conversation `prompt + assistant(chosen)` tokenized by
`kotune.data.tokenize.tokenize_conversations`, the SFT code itself: the prompt is everything before the last
trained span and the reply is that span (reply + EOS). So the reward model, DPO and PPO see the same tokens the
SFT model was trained on, and a PPO prompt is the same ids as the prompt of a pair.

Every pair that is dropped is counted by reason: invalid records (empty side, chosen == rejected, ...) by the
loader, and after tokenization prompts that fill max_length and pairs that become identical once cut.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from kotune.common.losses import IGNORE_INDEX
from kotune.data.loading import LoadResult, load_examples
from kotune.data.schema import Conversation, Message, PreferencePair, Source
from kotune.data.tokenize import tokenize_conversations


@dataclass
class TokenPair:
    """One pair as ids: `prompt_ids + chosen_ids` is the chosen sequence; replies end with EOS unless cut."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    source: Source | None = None
    truncated: bool = False

    @property
    def chosen_sequence(self) -> list[int]:
        return self.prompt_ids + self.chosen_ids

    @property
    def rejected_sequence(self) -> list[int]:
        return self.prompt_ids + self.rejected_ids


def _last_trained_span(labels: list[int]) -> tuple[int, int]:
    end = max(i for i, label in enumerate(labels) if label != IGNORE_INDEX) + 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return start, end


def split_prompt_replies(
    tokenizer, prompts: list[tuple[Message, ...]], replies: list[str], sources: list[Source | None]
) -> list[tuple[list[int], list[int]]]:
    """`(prompt_ids, reply_ids)` for each prompt and reply, tokenized as SFT tokenizes the conversation.

    Earlier assistant turns of a multi-turn prompt belong to the prompt; only the last reply is returned as reply.
    """
    conversations = [
        Conversation((*prompt, Message("assistant", reply)), source) for prompt, reply, source in zip(prompts, replies, sources)
    ]
    out = []
    for ex in tokenize_conversations(tokenizer, conversations, max_length=None):
        start, end = _last_trained_span(ex.labels)
        out.append((ex.input_ids[:start], ex.input_ids[start:end]))
    return out


def prompt_ids(tokenizer, prompts: list[tuple[Message, ...]]) -> list[list[int]]:
    """Generation prompts (rendered with the generation prompt) as the ids a pair with that prompt would have.

    A placeholder reply is appended and cut off again: the prompt segments do not depend on the reply, and this
    way the prompt ids come from the same code path as the pairs the reward model was trained on.
    """
    return [p for p, _ in split_prompt_replies(tokenizer, prompts, ["."] * len(prompts), [None] * len(prompts))]


def _cut(prompt: list[int], reply: list[int], max_length: int) -> tuple[list[int], bool]:
    room = max_length - len(prompt)
    return reply[: max(room, 0)], len(prompt) + len(reply) > max_length


def tokenize_pairs(tokenizer, pairs: list[PreferencePair], max_length: int) -> tuple[list[TokenPair], Counter, list[str]]:
    """Tokenize pairs; returns the kept pairs, counts of dropped pairs per reason, and one line per dropped pair."""
    sources = [p.source for p in pairs]
    prompts = [p.prompt for p in pairs]
    chosen = split_prompt_replies(tokenizer, prompts, [p.chosen for p in pairs], sources)
    rejected = split_prompt_replies(tokenizer, prompts, [p.rejected for p in pairs], sources)
    kept: list[TokenPair] = []
    dropped: Counter = Counter()
    lines: list[str] = []
    for pair, (prompt, c_ids), (prompt_r, r_ids) in zip(pairs, chosen, rejected):
        if prompt != prompt_r:  # the template rendered the same prompt differently: a bug to surface, not skip
            raise ValueError(f"{pair.source}: the prompt tokenized differently for chosen and rejected")
        c_cut, c_trunc = _cut(prompt, c_ids, max_length)
        r_cut, r_trunc = _cut(prompt, r_ids, max_length)
        reason = None
        if not c_cut or not r_cut:
            reason = f"prompt_too_long: the prompt alone has {len(prompt)} tokens, data.max_length is {max_length}"
        elif c_cut == r_cut:
            reason = f"identical_after_truncation: chosen and rejected agree on their first {len(c_cut)} tokens"
        if reason:
            dropped[reason.split(":")[0]] += 1
            lines.append(f"{pair.source}: {reason}")
            continue
        kept.append(TokenPair(prompt, c_cut, r_cut, pair.source, c_trunc or r_trunc))
    return kept, dropped, lines


def split_held_out(items: list, key, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out `fraction` of the distinct `key(item)` values, seeded: the same items give the same split on every
    rerun and every process (keys are sorted before the seeded shuffle, so file order and duplicates do not move
    it). Items sharing a key land on the same side. Returns (kept, held out), each in input order."""
    if fraction <= 0:
        return items, []
    keys = sorted({key(item) for item in items})
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(fraction * len(keys))) if len(keys) > 1 else 0
    held = set(keys[:n_eval])
    return [x for x in items if key(x) not in held], [x for x in items if key(x) in held]


def split_by_prompt(pairs: list[TokenPair], fraction: float, seed: int) -> tuple[list[TokenPair], list[TokenPair]]:
    """Hold out `fraction` of the distinct prompts. All pairs of one prompt (KoChatGPT's ranked completions give
    three) land on the same side, so held-out accuracy is measured on prompts the model never trained on."""
    return split_held_out(pairs, lambda p: tuple(p.prompt_ids), fraction, seed)


@dataclass
class PreparedPairs:
    train: list[TokenPair]
    eval: list[TokenPair]
    report: dict = field(default_factory=dict)


def _load(files: list[str], format: str | None, skip_invalid: bool, log, kind: str = "preference") -> LoadResult:
    loaded = load_examples(files, format=format, kind=kind, skip_invalid=skip_invalid)
    for problem in loaded.problems:
        log(f"skipped {problem}")
    for line in loaded.ignored_lines():
        log(f"ignored field {line}")
    return loaded


def prepare_pairs(data, tokenizer, seed: int, log=print) -> PreparedPairs:
    """Load, check, tokenize and split the pairs of a `PairDataConfig`; print and return what was dropped and why.

    Raises:
        DataError: invalid records and `skip_invalid` is false (every one is listed).
        ValueError: no pair is left to train on.
    """
    loaded = _load(data.files, data.format, data.skip_invalid, log)
    examples = loaded.examples[: data.max_pairs] if data.max_pairs else loaded.examples
    train, dropped, dropped_lines = tokenize_pairs(tokenizer, examples, data.max_length)
    eval_loaded = None
    if data.eval_files:
        eval_loaded = _load(data.eval_files, data.format, data.skip_invalid, log)
        held, eval_dropped, eval_lines = tokenize_pairs(tokenizer, eval_loaded.examples, data.max_length)
        dropped.update(eval_dropped)
        dropped_lines += eval_lines
    else:
        train, held = split_by_prompt(train, data.eval_fraction, seed)
    for line in dropped_lines:
        log(f"dropped {line}")
    problems = loaded.problems + (eval_loaded.problems if eval_loaded else [])
    per_kind = Counter(p.kind for p in problems)
    if problems or dropped:
        counts = {**per_kind, **dropped}
        log("skipped pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if not train:
        raise ValueError("no preference pair left to train on: see the skipped pairs above (data.max_length may be too small)")
    report = {
        "files": {**loaded.formats_per_file, **(eval_loaded.formats_per_file if eval_loaded else {})},
        "records_per_format": dict(loaded.records_per_format + (eval_loaded.records_per_format if eval_loaded
                                                                 else Counter())),
        "pairs_loaded": len(examples) + (len(eval_loaded.examples) if eval_loaded else 0),
        "skipped_records_per_kind": dict(per_kind),
        "skipped_records": [str(p) for p in problems],
        "ignored_fields": {name: len(where) for r in (loaded, eval_loaded) if r for name, where in r.ignored.items()},
        "dropped_after_tokenization": dict(dropped),
        "dropped_pairs": dropped_lines,
        "truncated_pairs": sum(p.truncated for p in train + held),
        "train_pairs": len(train),
        "eval_pairs": len(held),
    }
    log(f"pairs: {len(train):,} train, {len(held):,} held out, {report['truncated_pairs']:,} cut to "
        f"max_length={data.max_length}")
    return PreparedPairs(train, held, report)


Prompt = tuple[tuple[Message, ...], list[int]]


def prepare_prompts(data, tokenizer, seed: int, log=print) -> tuple[list[Prompt], list[Prompt], dict]:
    """Load the prompts of a `PromptDataConfig` as `(messages, ids)`, split into training and held-out prompts
    (`eval_files`, else a seeded `eval_fraction` of the distinct prompts); prompts over max_prompt_length are
    dropped and counted.

    Returns:
        (train, held_out, report)
    """
    sets, reports = [], []
    for held_out, files in enumerate((data.files, data.eval_files)):
        if not files:
            sets.append([])
            continue
        loaded = _load(files, data.format, data.skip_invalid, log, kind="prompts")
        convs = loaded.examples[: data.max_prompts] if data.max_prompts and not held_out else loaded.examples
        messages = [c.messages for c in convs]
        ids = prompt_ids(tokenizer, messages)
        kept = [(m, i) for m, i in zip(messages, ids) if len(i) <= data.max_prompt_length]
        sets.append(kept)
        reports.append((loaded, len(ids) - len(kept)))
    train, held = sets
    if not data.eval_files:
        train, held = split_held_out(train, lambda p: tuple(p[1]), data.eval_fraction, seed)
    too_long = sum(n for _, n in reports)
    if too_long:
        log(f"skipped {too_long} prompt(s) longer than data.max_prompt_length={data.max_prompt_length}")
    if not train:
        raise ValueError("no prompt left to train on: every prompt is invalid or longer than data.max_prompt_length")
    loads = [r for r, _ in reports]
    report = {
        "files": {k: v for r in loads for k, v in r.formats_per_file.items()},
        "skipped_records_per_kind": dict(sum((r.problems_per_kind for r in loads), Counter())),
        "skipped_records": [str(p) for r in loads for p in r.problems],
        "ignored_fields": dict(sum((Counter({n: len(w) for n, w in r.ignored.items()}) for r in loads), Counter())),
        "prompts_too_long": too_long,
        "prompts": len(train),
        "eval_prompts": len(held),
    }
    log(f"prompts: {len(train):,} train, {len(held):,} held out")
    return train, held, report
