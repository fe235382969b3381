"""`kotune data preview RECIPE`: the training text exactly as the trainer sees it, trained spans marked."""

from __future__ import annotations

import json
import sys

from kotune.config import load_config
from kotune.data.loading import load_examples
from kotune.data.templates import install_template
from kotune.data.tokenize import IGNORE_INDEX, tokenize_conversations
from kotune.models.load import stage_tokenizer
from kotune.sft.config import PreviewConfig, SFTConfig

OPEN, CLOSE = "\x1b[1;32m", "\x1b[0m"
PLAIN_OPEN, PLAIN_CLOSE = "⟦", "⟧"


def marked_text(tokenizer, input_ids: list[int], labels: list[int], open_: str, close: str) -> str:
    """Decode `input_ids`, wrapping every run of trained tokens in `open_` ... `close`."""
    parts, run, trained = [], [], None
    for token, label in zip(input_ids, labels):
        is_trained = label != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            text = tokenizer.decode(run)
            parts.append(f"{open_}{text}{close}" if trained else text)
            run = []
        run.append(token)
        trained = is_trained
    if run:
        text = tokenizer.decode(run)
        parts.append(f"{open_}{text}{close}" if trained else text)
    return "".join(parts)


def run(preview: PreviewConfig, out=None) -> int:
    out, limit, as_json = out or sys.stdout, preview.limit, preview.as_json
    cfg = load_config(SFTConfig, preview.recipe, preview.overrides)
    tokenizer = stage_tokenizer(cfg)
    template = install_template(tokenizer, cfg.data.template)
    loaded = load_examples(cfg.data.files, format=cfg.data.format, kind="sft", skip_invalid=True)
    examples = tokenize_conversations(tokenizer, loaded.examples[:limit], cfg.data.max_length)
    color = out.isatty() if hasattr(out, "isatty") else False
    for ex in examples:
        if as_json:
            text = tokenizer.decode(ex.input_ids)
            out.write(json.dumps({"text": text, "input_ids": ex.input_ids, "labels": ex.labels}, ensure_ascii=False) + "\n")
            continue
        open_, close = (OPEN, CLOSE) if color else (PLAIN_OPEN, PLAIN_CLOSE)
        out.write(f"── {ex.source} · template {template} · {len(ex.input_ids)} tokens, {ex.num_trained} trained"
                  f"{' · truncated' if ex.truncated else ''} ──\n")
        out.write(marked_text(tokenizer, ex.input_ids, ex.labels, open_, close) + "\n\n")
    if not as_json:
        out.write(f"trained spans are marked {'in green' if color else PLAIN_OPEN + '…' + PLAIN_CLOSE}; "
                  f"{len(loaded.problems)} invalid record(s) not shown (run `kotune data check`)\n")
    return 0
