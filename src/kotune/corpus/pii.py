"""Korean personal data masked with placeholders, each kind counted (`masked_<kind>` in the datatrove stats).

datatrove's PIIFormatter knows e-mail and IP addresses only; Korean resident registration numbers and phone
numbers have fixed shapes that a regular expression catches without a model."""

from __future__ import annotations

import re

from datatrove.pipeline.formatters.base import BaseFormatter

from kotune.corpus.config import PiiConfig

# YYMMDD-SNNNNNN: a real date, then a sex/century digit 1-8 (1/2: 1900s, 3/4: 2000s, 5-8: foreign residents).
RESIDENT_NUMBER = re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-\s?[1-8]\d{6}(?!\d)")
# Mobile (010, 011, 016-019) and area codes (02, 031-064, 070), with -, ., space or nothing between the parts,
# and the +82 form that drops the leading 0. Service numbers (1588-xxxx) belong to businesses and are kept.
PHONE = re.compile(r"(?<![\d+])(?:\+82[-. ]?|0)(?:1[016789]|2|[3-6][1-5]|70)\)?[-. ]?\d{3,4}[-. ]?\d{4}(?!\d)")
# No \b before the local part: Hangul is a word character, so "문의hong@x.kr" has no boundary before "h".
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

PLACEHOLDERS = {"resident_number": "<주민번호>", "phone": "<전화번호>", "email": "<이메일>"}
_PATTERNS = {"resident_number": RESIDENT_NUMBER, "phone": PHONE, "email": EMAIL}


def mask_pii(text: str, kinds: list[str]) -> tuple[str, dict[str, int]]:
    """Replace every match of each kind (resident numbers first: their digits could look like a phone number).

    Returns:
        The masked text and the number of replacements per kind.
    """
    counts = {}
    for kind in kinds:
        text, counts[kind] = _PATTERNS[kind].subn(PLACEHOLDERS[kind], text)
    return text, counts


class KoreanPiiMasker(BaseFormatter):
    name = "🔒 Korean PII"

    def __init__(self, cfg: PiiConfig):
        super().__init__()
        self.kinds = [kind for kind in _PATTERNS if getattr(cfg, kind)]

    def format(self, text: str) -> str:
        text, counts = mask_pii(text, self.kinds)
        for kind, n in counts.items():
            if n:
                self.stat_update(f"masked_{kind}", value=n)
        if any(counts.values()):
            self.stat_update("documents_masked")
        return text
