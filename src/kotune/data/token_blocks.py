"""Pre-training data on disk: documents tokenized once into flat token files, read back memory-mapped in
fixed-length blocks.

Each document is followed by EOS; the stream is cut into blocks of `block_size` tokens, the last one shorter,
so no token is dropped or repeated. Inside a block, position_ids restart after every EOS so attention
implementations that read sequence boundaries from them (transformers' packed-sequence mask for sdpa/eager,
flash-attention varlen) keep documents apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from kotune.common.losses import IGNORE_INDEX

DTYPE = np.uint32
_GOLDEN = 0x9E3779B1


def is_held_out(doc_index: int, eval_fraction: float) -> bool:
    """A fixed pseudo-random choice of held-out documents, the same in every run."""
    return (((doc_index + 1) * _GOLDEN) & 0xFFFFFFFF) / 2**32 < eval_fraction


def write_token_files(documents: Iterable[str], tokenizer, out_dir: str | Path, *, eval_fraction: float,
                      batch_size: int = 1000, meta: dict | None = None) -> dict:
    """Tokenize `documents` (streamed, in batches) into `train.bin` and `eval.bin` under `out_dir`.

    Returns:
        The metadata written to `tokens.json`: token and document counts per split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eos_token_id
    counts = {"train": [0, 0], "eval": [0, 0]}  # tokens, documents
    files = {split: (out / f"{split}.bin.tmp").open("wb") for split in counts}
    doc_index = 0

    def flush(batch: list[str], start: int) -> None:
        for i, ids in enumerate(tokenizer(batch, add_special_tokens=False)["input_ids"]):
            split = "eval" if is_held_out(start + i, eval_fraction) else "train"
            np.asarray([*ids, eos], dtype=DTYPE).tofile(files[split])
            counts[split][0] += len(ids) + 1
            counts[split][1] += 1

    stream = iter(documents)
    while batch := list(islice(stream, batch_size)):
        flush(batch, doc_index)
        doc_index += len(batch)
    for split, f in files.items():
        f.close()
        (out / f"{split}.bin.tmp").replace(out / f"{split}.bin")
    info = {**(meta or {}), "dtype": "uint32", "eos_token_id": eos,
            **{f"{split}_tokens": c[0] for split, c in counts.items()},
            **{f"{split}_documents": c[1] for split, c in counts.items()}}
    (out / "tokens.json").write_text(json.dumps(info, ensure_ascii=False, indent=1))
    return info


class TokenBlocks:
    """Fixed-length blocks over a memory-mapped token file, for the training loop (see training.loop.TokenData)."""

    def __init__(self, path: str | Path, block_size: int, eos_id: int, pad_id: int):
        size = Path(path).stat().st_size // np.dtype(DTYPE).itemsize
        self.tokens = np.memmap(path, dtype=DTYPE, mode="r", shape=(size,)) if size else np.zeros(0, DTYPE)
        self.block_size, self.eos_id, self.pad_id = block_size, eos_id, pad_id

    def __len__(self) -> int:
        return math.ceil(len(self.tokens) / self.block_size)

    def block(self, index: int) -> np.ndarray:
        return np.asarray(self.tokens[index * self.block_size : (index + 1) * self.block_size], dtype=np.int64)

    def length(self, index: int) -> int:
        return len(self.block(index))

    def trained_tokens(self, index: int) -> int:
        return self.length(index) - 1  # the first token of a block has no context inside the block

    def position_ids(self, ids: np.ndarray) -> np.ndarray:
        """Positions restarting after every EOS, so documents packed in one block do not attend to each other."""
        starts = np.zeros(len(ids), dtype=np.int64)
        boundary = np.flatnonzero(ids[:-1] == self.eos_id) + 1
        starts[boundary] = boundary
        return np.arange(len(ids)) - np.maximum.accumulate(starts)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """[B, block] inputs with position_ids and no attention_mask; a short last block is padded with
        positions that continue its last document, so no real token attends to padding."""
        width = max(self.length(i) for i in indices)
        input_ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids = self.block(i)
            pos = self.position_ids(ids)
            n = len(ids)
            input_ids[row, :n] = torch.from_numpy(ids)
            labels[row, 1:n] = torch.from_numpy(ids[1:])
            position_ids[row, :n] = torch.from_numpy(pos)
            position_ids[row, n:] = torch.arange(pos[-1] + 1, pos[-1] + 1 + width - n)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def vocab_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer's vocabulary: token files made with one are read only with the same one."""
    import hashlib

    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
