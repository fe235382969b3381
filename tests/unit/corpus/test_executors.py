"""The executor section reaches datatrove: the shipped Slurm recipe's keys become the job arrays' options, chained
stage after stage (built only; nothing is submitted)."""

from pathlib import Path

from kotune.config import load_config
from kotune.corpus.config import CorpusRecipe
from kotune.corpus.run import build_stages
from kotune_test_paths import REPO


def test_slurm_recipe_keys_reach_the_job_arrays(tmp_path):
    cfg = load_config(CorpusRecipe, str(REPO / "recipes/corpus/slurm_web_ko.yaml"), [f"output_dir={tmp_path}"])
    stages = build_stages(cfg, Path(cfg.output_dir), ("tokenizer.json", 0))
    names = [name for name, _ in stages]
    assert names == ["filter", "exact_find", "minhash_sigs", "minhash_buckets", "minhash_cluster", "documents", "tokenize"]
    tasks = {name: e.tasks for name, e in stages}
    assert tasks == {"filter": 512, "exact_find": 1, "minhash_sigs": 512, "minhash_buckets": 16, "minhash_cluster": 1,
                     "documents": 512, "tokenize": 512}
    for (_, previous), (name, e) in zip(stages, stages[1:]):
        assert e.depends is previous, name  # each job array waits for the one before
    args = stages[-1][1].get_sbatch_args()
    assert (args["partition"], args["time"], args["cpus-per-task"], args["mem-per-cpu"], args["account"]) == \
        ("cpu", "12:00:00", 1, "4G", "my-account")
    assert all(e.workers == min(256, e.tasks) for _, e in stages)
