"""The datatrove blocks kotune adds: a plain-text reader, a reader that keeps a task's file with its task,
character shingles for MinHash, and the writer of kotune's token files."""

# No `from __future__ import annotations`: datatrove picks the exact-dedup hash from document_text's return
# annotation, which must be the type str, not the string "str".
import hashlib
import json

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.batching import batched
from datatrove.utils.logging import logger
from datatrove.utils.text import simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

from kotune.data.corpus import group_documents

_BASE, _MIX, _MERSENNE = np.uint64(0x100000001B3), np.uint64(0xBF58476D1CE4E5B9), np.uint64((1 << 61) - 1)
TOKEN_DTYPE = np.uint32  # kotune.data.token_blocks.DTYPE: what `kotune pretrain` memory-maps


class TxtReader(BaseDiskReader):
    """Plain text: one document per non-blank line, or per blank-line-separated paragraph (`unit`).
    A document's id is `FILE/INDEX`, its place in the file, so ids are the same however files are sharded."""

    name = "📄 Txt"

    def __init__(self, data_folder: DataFolderLike, unit: str = "line", compression: str | None = "infer", **kw):
        super().__init__(data_folder, **kw)
        self.unit = unit
        self.compression = compression

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "r", compression=self.compression, encoding="utf-8") as f:
            for index, text in enumerate(group_documents((line.rstrip("\r\n") for line in f), self.unit)):
                with self.track_time():
                    document = self.get_document_from_dict({"text": text, "id": f"{filepath}/{index}"}, filepath, index)
                if document:
                    yield document


class CheckedJsonlReader(JsonlReader):
    """datatrove's JSON Lines reader skips a line it cannot parse, or a record without text, with one log warning.
    A corpus must not lose documents unnoticed: each such line is counted under its reason (the stats table shows
    the counts) and logged as FILE:LINE: reason in its task's log (work/logs/filter/logs)."""

    SKIPPED = ("unreadable_json", "no_text")

    def _skip(self, filepath: str, line: int, reason: str, why: str) -> None:
        self.stat_update(reason)
        logger.warning(f"{filepath}:{line}: {why}; line skipped")

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import orjson

        with self.data_folder.open(filepath, "r", compression=self.compression) as f:
            for index, line in enumerate(f):
                if not line.strip():
                    continue
                with self.track_time():
                    try:
                        data = orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        self._skip(filepath, index + 1, "unreadable_json", f"not JSON ({e})")
                        continue
                    text = data.get(self.text_key) if isinstance(data, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        self._skip(filepath, index + 1, "no_text", f"{self.text_key}: missing, empty or not a string")
                        continue
                    document = self.get_document_from_dict(data, filepath, index)
                yield document


class TaskFileReader(JsonlReader):
    """Reads `{rank:05d}.jsonl.gz`, the file task `rank` wrote in the stage before.

    datatrove's readers deal files out by position (files[rank::tasks]); a task whose documents were all
    filtered writes no file, which would shift every later file to the wrong task and so misalign the dedup
    stages, whose duplicate lists are by (task, document index)."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            yield from self.read_files_shard([name])


class CharacterMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash stage 1 with character shingles hashed in numpy.

    datatrove hashes each shingle string in Python (sha1/xxhash of " ".join(chars)): 1 ms for a 300-character
    document, most of the refining time. Here the shingles are the same character n-grams (normalised text,
    spaces removed: see CharacterShingles), hashed as a polynomial of their code points over all positions at
    once; the permutations and LSH bands that follow are datatrove's."""

    def get_shingles(self, text: str) -> np.ndarray:
        chars = "".join(simplify_text(text, self.config.norm_config).split())
        n = self.config.n_grams
        codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        if len(codes) < n:
            return np.zeros((0, 1), dtype=np.uint64)
        with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
            h = np.zeros(len(codes) - n + 1, dtype=np.uint64)
            for k in range(n):
                h = h * _BASE + codes[k : len(codes) - n + 1 + k]
            h ^= h >> np.uint64(29)
            h = h * _MIX
            h ^= h >> np.uint64(32)
        return np.unique(h % _MERSENNE).reshape(-1, 1)  # below 2^61 - 1, the modulus of datatrove's permutations


class CharacterShingles(WordTokenizer):
    """MinHash "words" for Korean: the characters (syllables) of the text with whitespace removed.

    Korean near-copies differ by spacing (띄어쓰기 varies between writers), by particles glued to nouns (은/는,
    이/가, 을/를) and by endings glued to verbs: with eojeol as words each such change alters every shingle that
    holds the eojeol, with syllables only the n-grams across the changed syllable. Removing spaces makes a
    spacing change invisible. Three syllables are about one eojeol (KoAlpaca answers: 3.3 syllables each)."""

    def __init__(self):
        super().__init__("ko")

    def word_tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def hash_config():
    """sha1, not datatrove's default xxhash: xxhash 4 (installed for other libraries) refuses str input, and
    datatrove pins xxhash<4 only in its heavy `processing` extra."""
    from datatrove.utils.hashing import HashConfig

    return HashConfig(precision=64, hash_fc="sha1")


def minhash_config(d):
    """datatrove's MinHash settings from the recipe's `dedup` section: text normalised by datatrove first (lower
    case, no punctuation, digits -> 0) but without its diacritics step, which decomposes every Hangul syllable
    into jamo (NFD) and would make a "character" a third of a syllable; then CharacterShingles."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.text import TextNormConfig

    return MinhashConfig(n_grams=d.char_ngrams, num_buckets=d.num_buckets, hashes_per_bucket=d.hashes_per_bucket,
                         seed=d.seed, hash_config=hash_config(), norm_config=TextNormConfig(norm_unicode_diacritics=False))


def document_text(doc: Document) -> str:
    """What exact dedup compares: the text, ends trimmed."""
    return doc.text.strip()


def held_out(doc_id: str, eval_fraction: float) -> bool:
    """A fixed pseudo-random choice by document id: the same split with any number of tasks or workers."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little") / 2**64 < eval_fraction


class TokenFileWriter(PipelineStep):
    """Tokenize documents into kotune's token files, one set per task: `{rank}.train.bin`, `{rank}.eval.bin`
    (uint32 ids, each document followed by EOS) and `{rank}.documents.jsonl` (id, split, token count).

    datatrove's DocumentTokenizer writes one stream per task without the held-out split `kotune pretrain`
    scores perplexity on, and switches to uint16 for small vocabularies; these files are what pretrain
    memory-maps, so it starts on them without tokenizing again."""

    type = "🔢 - TOKENIZER"
    name = "✍️ kotune token files"

    def __init__(self, output_folder: DataFolderLike, tokenizer_file: str, eos_token_id: int, eval_fraction: float,
                 batch_size: int = 1000):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.tokenizer_file = tokenizer_file
        self.eos = eos_token_id
        self.eval_fraction = eval_fraction
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(self.tokenizer_file)
        names = {split: f"{rank:05d}.{split}.bin" for split in ("train", "eval")}
        files = {split: self.output_folder.open(name, "wb") for split, name in names.items()}
        index = self.output_folder.open(f"{rank:05d}.documents.jsonl", "wt")
        try:
            for batch in batched(data, self.batch_size):
                with self.track_time(unit="batch"):
                    encodings = tokenizer.encode_batch([doc.text for doc in batch], add_special_tokens=False)
                for doc, enc in zip(batch, encodings):
                    split = "eval" if held_out(doc.id, self.eval_fraction) else "train"
                    files[split].write(np.asarray([*enc.ids, self.eos], dtype=TOKEN_DTYPE).tobytes())
                    index.write(json.dumps({"id": doc.id, "split": split, "tokens": len(enc.ids) + 1}) + "\n")
                    self.stat_update("documents")
                    self.stat_update(f"{split}_tokens", value=len(enc.ids) + 1)
        finally:
            for f in (*files.values(), index):
                f.close()
