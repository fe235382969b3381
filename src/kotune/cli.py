"""`kotune`: one command, a subcommand per stage. Maps arguments to a stage's `run`; nothing else.

Heavy libraries (torch, transformers) are imported only inside the chosen subcommand, so `kotune --help`
answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pkgutil import resolve_name

from kotune import __version__

from kotune.stages import LAUNCHABLE_STAGES, RECIPE_STAGES

EPILOG_RECIPE = ("Overrides are dotted keys of the recipe, e.g. train.epochs=1 data.max_length=512 method=lora; "
                 "they may come before or after the flags.")


def _recipe_stage(sub, name: str, help: str, config_path: str, run_path: str) -> None:
    """A stage run from a YAML recipe plus key=value overrides; `--help` lists every recipe key."""

    def describe_config() -> str:
        from kotune.common.options import describe

        return "recipe keys:\n" + "\n".join(describe(resolve_name(config_path)))

    p = sub.add_parser(name, help=help, description=help, epilog=EPILOG_RECIPE,
                       formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("-h", "--help", action="store_true", help="show this help and every recipe key")
    if name == "pipeline":
        p.add_argument("--force", action="append", default=[], metavar="STAGE",
                       help="redo STAGE (and every stage that starts from it) even if unchanged; repeatable")
        p.add_argument("--dry-run", action="store_true",
                       help="print each stage, run or skip, and why (what changed since it ran); run nothing")
        p.add_argument("--check", action="store_true",
                       help="build every stage's configuration (recipes, set: overrides, wired paths) and print OK per "
                            "stage; run nothing (every run does this first)")
    if name in LAUNCHABLE_STAGES:
        p.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="train with N processes: re-runs this command under torchrun (DDP), or under "
                            "accelerate launch with --accelerate-config")
        p.add_argument("--accelerate-config", default=None, metavar="FILE",
                       help="launch with this accelerate config (recipes/accelerate/: ddp, fsdp2, deepspeed_zero2|3)")
        p.add_argument("--overwrite", action="store_true",
                       help="clear what an earlier run left in output_dir (model, metrics, checkpoints) before "
                            "starting; without it a used output_dir is refused (same as overwrite=true)")

    def handler(args: argparse.Namespace) -> int:
        if args.help or not args.recipe:
            p.print_help()
            print("\n" + describe_config())
            return 0 if args.help else 2
        from kotune.config import load_config

        if getattr(args, "overwrite", False):
            args.overrides.append("overwrite=true")  # an override, so a relaunch under torchrun carries it too
        cfg = load_config(resolve_name(config_path), args.recipe, args.overrides)  # a bad recipe fails before launching
        if getattr(args, "nproc", None) is not None or getattr(args, "accelerate_config", None) is not None:
            from kotune.launch import launch_refusal, relaunch

            refused = launch_refusal(cfg)
            if refused:
                raise ValueError(refused)
            return relaunch([name, args.recipe, *args.overrides], args.nproc, args.accelerate_config)
        if name != "pipeline":
            resolve_name(run_path)(cfg)
            return 0
        from kotune.pipeline.run import StageFailed

        try:
            resolve_name(run_path)(cfg, force=args.force, dry_run=args.dry_run, check=args.check)
        except StageFailed as e:
            print(f"kotune: error: {e}", file=sys.stderr)
            return 1
        return 0

    p.set_defaults(handler=handler, command_parser=p)


def _config_command(sub, name: str, help: str, config_path: str, run_path: str) -> None:
    """A command whose options are a config dataclass: one flag per field, then `run(cfg)`."""
    from kotune.common.options import add_flags

    p = sub.add_parser(name, help=help, description=help)
    add_flags(p, resolve_name(config_path))

    def handler(args: argparse.Namespace) -> int:
        from kotune.common.options import from_args

        result = resolve_name(run_path)(from_args(resolve_name(config_path), args))
        return result if isinstance(result, int) else 0

    p.set_defaults(handler=handler, command_parser=p, config=config_path)


# Commands that are not recipe stages: group -> (group help, {command: (help, config dataclass, run function)}).
# Their flags come from the dataclass (kept light: building `kotune --help` imports it, never torch).
COMMANDS: dict[str | None, tuple[str | None, dict[str, tuple[str, str, str]]]] = {
    "data": ("check, preview and deduplicate training data", {
        "check": ("validate data files: counts per format and problem, every problem as FILE:LINE: field: reason",
                  "kotune.data.check.CheckConfig", "kotune.data.check.command"),
        "preview": ("show training text with trained spans marked, as the trainer sees it",
                    "kotune.sft.config.PreviewConfig", "kotune.sft.preview.run"),
        "dedup": ("drop near-duplicate instructions (character ROUGE-L F above the threshold, Alpaca's rule) and "
                  "report every dropped pair", "kotune.data.dedup.DedupConfig", "kotune.data.dedup.run")}),
    "model": ("build local models", {
        "tiny": ("train a Korean byte-level BPE tokenizer and save a tiny random model (tests, quickstart)",
                 "kotune.models.tiny.TinyConfig", "kotune.models.tiny.run")}),
    "lora": ("LoRA adapter tools", {
        "merge": ("merge a LoRA adapter into its base model and save a plain model", "kotune.models.lora.MergeConfig",
                  "kotune.models.lora.run")}),
    "tokenizer": ("train Korean tokenizers", {
        "train": ("train a byte-level BPE tokenizer on Korean corpora and report how well it fits",
                  "kotune.pretrain.tokenizer_config.TokenizerConfig", "kotune.pretrain.tokenizer.run")}),
    "eval": ("evaluate models: KoBEST and any lm-eval task, generation checks, pairwise judging, a Markdown report", {
        "kobest": ("KoBEST through lm-evaluation-harness, offline: acc and macro-F1 per task and shot count, beside "
                   "published numbers and any --baseline", "kotune.eval.config.KobestConfig", "kotune.eval.commands.kobest"),
        "lm-eval": ("any lm-evaluation-harness tasks, by name (data from the Hub) or a folder of task YAMLs (local "
                    "data, offline): every metric per task and shot count, beside any --baseline",
                    "kotune.eval.config.LmEvalConfig", "kotune.eval.commands.lm_eval"),
        "generate": ("reply to a Korean prompt set with the model's chat template; report stop rate, repetition, "
                     "distinct-1/2, length and looping replies", "kotune.eval.config.GenerateConfig",
                     "kotune.eval.generate_eval.run"),
        "judge": ("compare chat models pairwise with an OpenAI-compatible judge on Korean questions (both orders, "
                  "cached): win/tie/loss and win rate with 95% intervals", "kotune.eval.config.JudgeConfig",
                  "kotune.eval.judge.run")}),
    None: (None, {
        "plan": ("per-GPU memory of a training recipe per engine (single, DDP, FSDP2, ZeRO-2/3), whether it fits, and "
                 "what to change if not; offline, no GPU needed", "kotune.plan.report.PlanConfig", "kotune.plan.report.run"),
        "chat": ("multi-turn chat in the terminal, streamed (/reset, /system TEXT, /exit)",
                 "kotune.serve.config.ChatConfig", "kotune.serve.chat_cli.run"),
        "serve": ("OpenAI-compatible API (/v1/chat/completions, streaming) and a chat page at /",
                  "kotune.serve.config.ServeConfig", "kotune.serve.openai_api.run")}),
}


def _config_commands(sub) -> None:
    for group, (group_help, commands) in COMMANDS.items():
        parent = sub
        if group is not None:
            parser = sub.add_parser(group, help=group_help)
            parent = parser.add_subparsers(dest=f"{group}_command", required=True,
                                           metavar="{" + ",".join(commands) + "}")
        for name, spec in commands.items():
            _config_command(parent, name, *spec)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kotune",
        description="Turn a Korean base language model into an instruction-following chat model.",
        epilog="Run `kotune <command> --help` for a command's options. Recipes live in recipes/.",
    )
    parser.add_argument("--version", action="version", version=f"kotune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (help, config_path, run_path) in RECIPE_STAGES.items():
        _recipe_stage(sub, name, help, config_path, run_path)
    _config_commands(sub)
    return parser


def _is_override(token: str) -> bool:
    key, sep, _ = token.partition("=")
    return bool(sep and key) and not token.startswith("-")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line, taking `key=value` overrides from anywhere after a command's positionals.

    argparse fills a `nargs="*"` positional from one run of tokens only: in `sft R --nproc 2 train.epochs=1` the
    override after the flag is left over. Users type overrides in any order, so every left-over `key=value` goes
    to the command's overrides; anything else left over is an error, as with `parse_args`.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [t for t in extras if _is_override(t)]
        extras = [t for t in extras if not _is_override(t)]
    if extras:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kotune.common.quiet import quiet_libraries

    quiet_libraries()  # library warnings go to the run's libraries.log, not the terminal (KOTUNE_VERBOSE=1: both)
    args = parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = int(handler(args) or 0)
        if "torch.distributed" in sys.modules:  # a launched stage: leave the process group together (see there)
            from kotune.training.distributed import close_process_group

            close_process_group()
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        # Config, data and template errors (all ValueError) and missing files are the user's to fix: one clear
        # message instead of a traceback. KOTUNE_DEBUG=1 shows the traceback.
        if os.environ.get("KOTUNE_DEBUG"):
            raise
        print(f"kotune: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
