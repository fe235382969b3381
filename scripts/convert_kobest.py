"""Convert the KoBEST v1.0 TSV files into the JSONL that `kotune eval kobest` reads.

    .venv/bin/python scripts/convert_kobest.py                       # ../shared/data/kobest/v1.0 -> src/kotune/resources/kobest/v1.0
    .venv/bin/python scripts/convert_kobest.py --src DIR --out DIR

lm-evaluation-harness's kobest tasks read the Hugging Face dataset `skt/kobest_v1`, whose field names and label
encodings differ from the TSV files of SKT-LSL/KoBEST_datarepo. This script produces exactly the hub's rows,
following that dataset's loading script (`kobest_v1.py`): the same columns renamed the same way, the same label
mappings, rows in file order, TSV `dev` written as split `validation`.

- TSVs are parsed as CSV with tab delimiters (quotes honoured, `""` an escaped quote), which is what the hub's
  `pandas.read_csv(sep="\\t")` does: a few HellaSwag and BoolQ fields are quoted in the files.
- BoolQ `Answer` / WiC `ANSWER` are True/TRUE/False/FALSE: pandas reads them as booleans, so the hub's label is
  1 for any casing of true and 0 for false. Anything else is an error here (the hub would have called it 1).
- COPA `Answer` is 1 or 2: label = Answer - 1. HellaSwag and SentiNeg labels are kept as they are.
- WiC sentences keep the `[ ]` brackets around the target word, as the hub's rows do.
- SentiNeg `test` uses the negated `Text`/`Label` columns (the hub's `test` split; its `test_originated` split, the
  un-negated originals, is not written).

The script checks the row counts against the published split sizes and writes one `<split>.jsonl` per task and split.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "kobest" / "v1.0"
DEFAULT_OUT = REPO / "src" / "kotune" / "resources" / "kobest" / "v1.0"

# hub config name -> TSV folder
FOLDERS = {"boolq": "BoolQ", "copa": "COPA", "wic": "WiC", "hellaswag": "HellaSwag", "sentineg": "SentiNeg"}
SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # TSV file stem -> hub split name
# Rows per split (train, dev, test) as published with the data; a different count means a different file.
SIZES = {
    "boolq": (3665, 700, 1404),
    "copa": (3076, 500, 1000),
    "wic": (3318, 610, 1260),
    "hellaswag": (2029, 500, 500),
    "sentineg": (3649, 400, 397),
}


def _bool_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise ValueError(f"{where}: expected True/False, got {value!r}")
    return int(v == "true")


def _int_label(value: str, where: str, allowed: range) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{where}: expected an integer label, got {value!r}") from None
    if n not in allowed:
        raise ValueError(f"{where}: label {n} is not in {allowed.start}..{allowed.stop - 1}")
    return n


def convert_row(task: str, row: dict[str, str], where: str) -> dict:
    """One TSV row (by header name) as the hub's record for `task`."""
    if task == "boolq":
        return {"paragraph": row["Text"], "question": row["Question"], "label": _bool_label(row["Answer"], where)}
    if task == "copa":
        return {"premise": row["sentence"], "question": row["question"], "alternative_1": row["1"],
                "alternative_2": row["2"], "label": _int_label(row["Answer"], where, range(1, 3)) - 1}
    if task == "wic":
        return {"word": row["Target"], "context_1": row["SENTENCE1"], "context_2": row["SENTENCE2"],
                "label": _bool_label(row["ANSWER"], where)}
    if task == "hellaswag":
        return {"context": row["context"], **{f"ending_{i}": row[f"choice{i}"] for i in range(1, 5)},
                "label": _int_label(row["label"], where, range(0, 4))}
    if task == "sentineg":
        return {"sentence": row["Text"], "label": _int_label(row["Label"], where, range(0, 2))}
    raise ValueError(f"unknown KoBEST task {task!r}")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, dialect="excel-tab"))
    for i, row in enumerate(rows, start=2):
        # the hub drops rows with an empty cell (df.dropna()); none exist in v1.0, so one here is a changed file
        if any(v is None or v == "" for v in row.values()):
            raise ValueError(f"{path}:{i}: empty field in {row}")
    return rows


def convert(src: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write `out/<task>/<split>.jsonl` for every task and split; returns the row counts."""
    counts: dict[str, dict[str, int]] = {}
    for task, folder in FOLDERS.items():
        counts[task] = {}
        for (stem, split), expected in zip(SPLITS.items(), SIZES[task]):
            path = src / folder / f"{stem}.tsv"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; --src must be the KoBEST_datarepo v1.0 folder")
            rows = read_tsv(path)
            if len(rows) != expected:
                raise ValueError(f"{path}: {len(rows)} rows, expected {expected} (KoBEST v1.0)")
            records = [convert_row(task, row, f"{path}:{i}") for i, row in enumerate(rows, start=2)]
            target = out / task / f"{split}.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            counts[task][split] = len(records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"KoBEST v1.0 TSV folder (default {DEFAULT_SRC})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args()
    for task, splits in convert(args.src, args.out).items():
        print(f"{task:10s} " + "  ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
