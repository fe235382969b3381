"""Mask once: a conversation becomes `input_ids` and `labels` with IGNORE_INDEX on every untrained token.

The trained spans come from the structure of the conversation, never from comparing token ids with pad or
eos (polyglot-ko's pad can equal its eos). The text is rendered with the tokenizer's chat_template, split at
assistant turns, and each piece is tokenized on its own, so no BPE merge can cross a prompt/reply boundary
and the trained tokens decode to exactly reply + EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from kotune.data.schema import Conversation, Source
from kotune.data.templates import TemplateError, adds_bos, template_knows_input

from kotune.common.losses import IGNORE_INDEX  # noqa: F401  (re-exported: one definition)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    source: Source | None = None
    truncated: bool = False

    @property
    def num_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _messages_for(tokenizer, conversation: Conversation) -> list[dict]:
    if template_knows_input(tokenizer):
        return conversation.as_dicts()
    return [m.flatten_input().as_dict() for m in conversation.messages]


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_segments(tokenizer, conversation: Conversation) -> list[tuple[str, bool]]:
    """Split the rendered conversation into `(text, trained)` pieces; their concatenation is exactly
    `apply_chat_template(messages)`.

    Each assistant turn's text is the difference between the conversation rendered through that turn and
    rendered up to it with the generation prompt, so this works for any chat template that only appends.

    Raises:
        TemplateError: when the template rewrites earlier text as turns are added.
    """
    messages = _messages_for(tokenizer, conversation)
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        full = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            where = f" ({conversation.source})" if conversation.source else ""
            raise TemplateError(f"the chat template does not render turn {i + 1} as an extension of the earlier "
                                f"turns{where}; choose a built-in template (template: ko_chat)")
        segments.append((prompt[len(done):], False))
        segments.append((full[len(prompt):], True))
        done = full
    tail = _render(tokenizer, messages, add_generation_prompt=False)[len(done):]
    if tail:
        segments.append((tail, False))
    return segments


def tokenize_conversations(tokenizer, conversations: list[Conversation],
                           max_length: int | None) -> list[TokenizedExample]:
    """Tokenize and mask `conversations`; examples longer than `max_length` keep their start."""
    bos_id = tokenizer.bos_token_id if adds_bos(tokenizer) else None  # prepended here: pieces are tokenized bare
    rendered = [render_segments(tokenizer, c) for c in conversations]
    texts = [text for segments in rendered for text, _ in segments]
    pieces = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    examples = []
    for conversation, segments in zip(conversations, rendered):
        prepend = bos_id is not None and not (segments and segments[0][0].startswith(tokenizer.bos_token))
        input_ids, labels = ([bos_id], [IGNORE_INDEX]) if prepend else ([], [])
        for _, trained in segments:
            ids = next(pieces)
            input_ids.extend(ids)
            labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
        truncated = max_length is not None and len(input_ids) > max_length
        if truncated:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        examples.append(TokenizedExample(input_ids, labels, conversation.source, truncated))
    return examples


@dataclass
class TokenStats:
    """What is printed before training starts, and saved with the run."""

    examples: int
    tokens: int
    trained_tokens: int
    truncated: int
    with_eos: int
    without_trained_tokens: int

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / max(self.tokens, 1)

    def summary(self) -> str:
        return (f"examples: {self.examples:,} | tokens: {self.tokens:,} | trained tokens: {self.trained_tokens:,} "
                f"({self.trained_fraction:.1%}) | truncated: {self.truncated:,} | labels hold EOS: "
                f"{self.with_eos:,}/{self.examples:,} | no trained token: {self.without_trained_tokens:,}")


def token_stats(examples: list[TokenizedExample], eos_id: int | None) -> TokenStats:
    trained = [e.num_trained for e in examples]
    with_eos = sum(eos_id is not None and eos_id in e.labels for e in examples)
    return TokenStats(len(examples), sum(len(e.input_ids) for e in examples), sum(trained),
                      sum(e.truncated for e in examples), with_eos, trained.count(0))


def check_trainable(stats: TokenStats, examples: list[TokenizedExample], eos_id: int | None) -> None:
    """Refuse to train when nothing would be learned, or when complete replies would not learn to stop.

    Raises:
        ValueError: with what to change.
    """
    if stats.trained_tokens == 0:
        raise ValueError("no trained token in any example: every reply was cut by max_length or is empty")
    missing = [e for e in examples if not e.truncated and eos_id not in e.labels]
    if missing:
        where = ", ".join(str(e.source) for e in missing[:5])
        raise ValueError(f"{len(missing)} untruncated example(s) do not train the EOS token ({where}); the chat "
                         "template must end assistant turns with eos_token, or the model never learns to stop")
