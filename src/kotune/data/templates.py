"""Prompt templates, written as Jinja chat templates so the one used to train is saved into the tokenizer
and `apply_chat_template` at serving time renders the same text, byte for byte.

Built-in templates:
- `koalpaca`: the bilingual KoAlpaca template of Polyglot-12.8b-KoAlpaca-SFT.md (with-input and no-input
  variants). KoAlpaca-Polyglot's training code writes it as Python triple-quoted strings whose lines end in a `\\n` escape, so every
  section is followed by three newlines; we keep that exactly and drop only the Markdown indentation.
- `koalpaca_v1.1`: KoAlpaca v1.1's `### 질문:` / `### 답변:` form.
- `ko_chat`: a Korean multi-turn chat template (`### 사용자:` / `### 어시스턴트:`).
- `tokenizer`: the tokenizer's own `chat_template`.

Every assistant turn ends with the EOS token, so stopping is learned. Separators that follow an assistant
turn are emitted by the *next* user turn, so an assistant turn's trained text is exactly reply + EOS.
"""

from __future__ import annotations

KOALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "아래는 작업을 설명하는 명령어와 추가적 맥락을 제공하는 입력이 짝을 이루는 예제입니다. "
    "요청을 적절히 완료하는 응답을 작성하세요.\n\n\n"
)
KOALPACA_PREAMBLE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "아래는 작업을 설명하는 명령어입니다. 명령어에 따른 요청을 적절히 완료하는 응답을 작성하세요.\n\n\n"
)


def _jinja_str(s: str) -> str:
    """A Python string as a Jinja string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


KOALPACA = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- messages[0]['content'] + '\\n\\n\\n' -}}{%- set msgs = messages[1:] -%}"
    "{%- else -%}{%- set msgs = messages -%}"
    "{%- if msgs and msgs[0]['input'] is defined and msgs[0]['input'] -%}"
    "{{- " + _jinja_str(KOALPACA_PREAMBLE_INPUT) + " -}}"
    "{%- else -%}{{- " + _jinja_str(KOALPACA_PREAMBLE_NO_INPUT) + " -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- for m in msgs -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if not loop.first -%}{{- '\\n\\n\\n' -}}{%- endif -%}"
    "{{- '### Instruction(명령어):\\n' + m['content'] + '\\n\\n\\n' -}}"
    "{%- if m['input'] is defined and m['input'] -%}{{- '### Input(입력):\\n' + m['input'] + '\\n\\n\\n' -}}{%- endif -%}"
    "{{- '### Response(응답):\\n' -}}"
    "{%- elif m['role'] == 'assistant' -%}{{- m['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def _headed_turns(question: str, answer: str) -> str:
    """Turns as `question` + the user's text, then `answer` + the reply + EOS, exchanges a blank line apart."""
    return (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'system' -%}{{- m['content'] + '\\n\\n' -}}"
        "{%- elif m['role'] == 'user' -%}"
        "{%- if not loop.first and messages[loop.index0 - 1]['role'] != 'system' -%}{{- '\\n\\n' -}}{%- endif -%}"
        "{{- '" + question + "' + m['content'] -}}"
        "{%- if m['input'] is defined and m['input'] -%}{{- '\\n\\n' + m['input'] -}}{%- endif -%}"
        "{{- '\\n\\n" + answer + "' -}}"
        "{%- elif m['role'] == 'assistant' -%}{{- m['content'] + eos_token -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


# v1.1 puts the reply after "### 답변: "; the space belongs to the prompt so the trained text is the reply alone.
KOALPACA_V11 = _headed_turns("### 질문: ", "### 답변: ")
KO_CHAT = _headed_turns("### 사용자:\\n", "### 어시스턴트:\\n")

BUILTIN_TEMPLATES: dict[str, str] = {"koalpaca": KOALPACA, "koalpaca_v1.1": KOALPACA_V11, "ko_chat": KO_CHAT}
TEMPLATE_NAMES = ("auto", "tokenizer", *BUILTIN_TEMPLATES)


class TemplateError(ValueError):
    """A chat template cannot be used for training (for example it rewrites earlier turns)."""


def resolve_template(name: str, tokenizer) -> tuple[str, str]:
    """The Jinja source of template `name` for `tokenizer` and the name actually used.

    `auto` takes the tokenizer's own chat_template when it has one (an instruction-tuned model keeps its
    format) and `ko_chat` otherwise.
    """
    if name == "auto":
        name = "tokenizer" if getattr(tokenizer, "chat_template", None) else "ko_chat"
    if name == "tokenizer":
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError("template: tokenizer has no chat_template; choose one of " + ", ".join(BUILTIN_TEMPLATES))
        return tokenizer.chat_template, name
    if name not in BUILTIN_TEMPLATES:
        raise TemplateError(f"template: unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
    return BUILTIN_TEMPLATES[name], name


def adds_bos(tokenizer) -> bool:
    """Whether `tokenizer` prepends BOS to plain text (LLaMA does, GPT-NeoX does not)."""
    ids = tokenizer("가", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def install_template(tokenizer, name: str) -> str:
    """Set `tokenizer.chat_template` to template `name` (saved with the tokenizer); returns the name used.

    For tokenizers that prepend BOS (LLaMA), a built-in template writes `bos_token` itself, because
    `apply_chat_template(tokenize=True)` adds no special tokens: training and serving then see the same ids.
    """
    source, used = resolve_template(name, tokenizer)
    if used in BUILTIN_TEMPLATES and adds_bos(tokenizer):
        source = "{{- bos_token -}}" + source
    tokenizer.chat_template = source
    return used


def template_knows_input(tokenizer) -> bool:
    """Whether the tokenizer's template renders Alpaca's `input` field itself (ours do)."""
    return "['input']" in (tokenizer.chat_template or "")
