"""Rejection rules for generated tasks that make sense for Korean; each rejection has a reason that is counted.

Alpaca's rules and what becomes of them here:
- more than 3 and at most 150 English words -> characters (spaces not counted) and eojeol: an eojeol is a word
  with its particles or endings attached, so Korean needs fewer of them for the same instruction;
- English blacklist matched as whole words -> Korean and English terms; Korean terms match inside an eojeol,
  because particles attach to them (사진을) and compounds are written without spaces (가족사진);
- `not inst[0].isascii()` drops every instruction that starts with Hangul -> gone; instead the instruction must
  be mostly Hangul (`min_hangul_ratio`), since the point is Korean data;
- first character in `string.punctuation` -> any punctuation or symbol, except the opening quotes and brackets
  Korean instructions often start with ('봄'을 주제로..., 「소나기」의 줄거리를...);
- added: an empty output (or Alpaca's `<nooutput>`) cannot be trained on.
"""

from __future__ import annotations

import re
import unicodedata

from kotune.common.terms import TermMatcher
from kotune.selfinstruct.config import FilterConfig
from kotune.selfinstruct.prompt import Task

_OPENERS = set("\"'“‘「『《〈【([{<")
_NO_OUTPUT = {"", "<nooutput>", "<no output>", "<출력 없음>"}


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


class TaskFilter:
    """`reason(task)` names the first rule a task breaks, or None when it passes them all."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self._blacklist = TermMatcher(cfg.blacklist, cfg.blacklist_exceptions)

    def blacklisted(self, text: str) -> str | None:
        """The blacklisted term `text` contains, if any."""
        return self._blacklist.find(text)

    def reason(self, task: Task) -> str | None:
        cfg, inst = self.cfg, task.instruction.strip()
        chars = len(re.sub(r"\s", "", inst))
        eojeol = len(inst.split())
        if chars < cfg.min_chars or eojeol < cfg.min_eojeol:
            return "too_short"
        if chars > cfg.max_chars or eojeol > cfg.max_eojeol:
            return "too_long"
        if self.blacklisted(inst):
            return "blacklist"
        if unicodedata.category(inst[0])[0] in "PS" and inst[0] not in _OPENERS:
            return "punctuation"
        letters = [ch for ch in inst if ch.isalpha()]
        if cfg.min_hangul_ratio and sum(map(_is_hangul, letters)) < cfg.min_hangul_ratio * len(letters):
            return "not_korean"
        if task.output.strip().lower() in _NO_OUTPUT:
            return "empty_output"
        return None
