"""Functions the kobest task YAMLs in this folder name with `!function utils.<name>`.

The prompt functions are those of lm-evaluation-harness's `lm_eval/tasks/kobest/utils.py` (MIT licence,
EleutherAI), written out here so that kotune's KoBEST prompts do not change when the harness is upgraded; a test
(`tests/e2e/test_eval_kobest.py`) runs the harness's own kobest YAMLs beside these and fails if the scores differ.

`macro_f1_score` is the harness's aggregation too. What differs is how the task YAMLs use it: the harness's
`metric: f1` entries say `hf_evaluate: true`, which makes lm-eval try `evaluate.load("f1")` from the Hub (an
error logged on every offline run, and a metric function that is then unused, because multiple-choice tasks
pass `(gold, pred)` pairs straight to the aggregation). Ours leave it out, so lm-eval takes its own registered
passthrough `f1` and this aggregation computes the score.
"""

from __future__ import annotations


def copa_doc_to_text(doc: dict) -> str:
    connector = {"원인": " 왜냐하면", "결과": " 그래서"}[doc["question"].strip()]
    return f"""{doc["premise"]} {connector}"""


def copa_doc_to_target(doc: dict) -> str:
    correct_choice = doc["alternative_1"] if doc["label"] == 0 else doc["alternative_2"]
    return f"""{correct_choice}"""


def copa_doc_to_choice(doc: dict) -> list:
    return [f"""{doc["alternative_1"]}""", f"""{doc["alternative_2"]}"""]


def sentineg_doc_to_text(doc: dict) -> str:
    return f"""문장: {doc["sentence"]} 긍부정:"""


def wic_doc_to_text(doc: dict) -> str:
    return f"""문장1: {doc["context_1"]} 문장2: {doc["context_2"]} 두 문장에서 {doc["word"]}가 같은 뜻으로 쓰였나?"""


def hellaswag_process_doc(dataset):
    def preprocessor(doc):
        return {
            "query": f"""문장: {doc["context"]}""",
            "choices": [doc["ending_1"], doc["ending_2"], doc["ending_3"], doc["ending_4"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(preprocessor)


def macro_f1_score(items) -> float:
    """Macro-averaged F1 over the whole split; `items` are the (gold, pred) pairs of every document."""
    from sklearn.metrics import f1_score

    golds, preds = zip(*items)
    return f1_score(golds, preds, average="macro")
