"""The `sjc` command. Parses, validates and dispatches; no logic of its own.

  sjc run    --prompt "a red cube"            3D: a voxel field through SJC (or SDS), scored at the end
  sjc image  --prompt "a red cube"            2D check: theta is an image, f is the identity
  sjc captions / sjc presets                  what the toy world knows, and the shipped configs
Every config field is settable with `--set section.key=value` (listed, with the values that will run, in
`sjc run [--config X] --help`).
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

from .configtools import help_lines, load_yaml
from .errors import ConfigError, SJCError

SHORTCUTS = {"prompt": "prompt.text", "model": "model.name", "steps": "steps", "seed": "seed",
             "out": "output.dir", "device": "model.device", "guidance": "guidance.kind"}


def preview(argv: list[str]) -> tuple[str, dict | None]:
    """The config `--config X` (or `--resume DIR`) in argv would start from, flattened, for `--help`; None when it
    cannot be read (the run itself will say why)."""
    from .config import load_config, preset_path
    from .configtools import flatten, to_dict

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    label = f"run {known.resume}" if known.resume else f"config {known.config or 'toy'}"
    try:
        path = Path(known.resume) / "config.json" if known.resume else preset_path(known.config or "toy")
        return label, flatten(to_dict(load_config(load_yaml(path), validate=False)))
    except SJCError:
        return label, None


def _engine_parser(sub, name: str, help: str, argv: list[str]) -> argparse.ArgumentParser:
    from .config import RunConfig

    label, values = preview(argv)
    head = (f"config fields of {label}, as `key = its value (default D)`, each settable with --set KEY=VALUE:"
            if values else "config fields (each settable with --set KEY=VALUE):")
    p = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=head + "\n" + "\n".join(help_lines(RunConfig, values=values)))
    p.add_argument("--config", default=None,
                   help="preset name (toy, sd, empirical; see sjc presets) or YAML file; default: toy, or the resumed "
                        "run's config. With --help: show that config's values")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set guidance.weight=50")
    p.add_argument("--prompt", help="shortcut for --set prompt.text=... (sjc captions lists the toy world's)")
    p.add_argument("--model", help="shortcut for --set model.name=... (toy, empirical, a folder, a cached repo id)")
    p.add_argument("--steps", help="shortcut for --set steps=...")
    p.add_argument("--seed", help="shortcut for --set seed=...")
    p.add_argument("--out", help="shortcut for --set output.dir=...")
    p.add_argument("--device", help="shortcut for --set model.device=... (auto, cpu, cuda, cuda:N)")
    p.add_argument("--guidance", help="shortcut for --set guidance.kind=... (paas, sds, csd, nfsd or ism)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--force", action="store_true",
                   help="run even if the model does not know some words of the prompt (a warning, not an error)")
    p.add_argument("--judge", default="toy", help="CLIP judge of the end-of-run scores (sjc evaluate --judges "
                                                  "spec; default toy: toy-world captions only)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="do not score the run at the end")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    return p


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sjc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    _engine_parser(sub, "run", "optimise a 3D voxel field for a prompt (SJC or SDS)", argv)
    _engine_parser(sub, "image", "the paper's 2D check: optimise an image directly", argv)
    from . import commands

    commands.add_subcommands(sub)
    return parser


def resolve_config(args: argparse.Namespace):
    """Preset/YAML (or the resumed run's config.json) + shortcuts + --set, validated."""
    from .config import load_config, preset_path
    from .jobs import resumable_config

    if args.resume:
        data = resumable_config(Path(args.resume))
        data.setdefault("output", {})["dir"] = str(Path(args.resume))
    else:
        data = load_yaml(preset_path(args.config or "toy"))
    for flag, key in SHORTCUTS.items():  # taken verbatim: a prompt "yes" stays the string "yes"
        if getattr(args, flag) is not None:
            section, _, leaf = key.rpartition(".")
            (data.setdefault(section, {}) if section else data)[leaf] = getattr(args, flag)
    return load_config(data, args.sets)


def check_device(name: str) -> None:
    """`model.device` must be one this machine has (checked here, at the edge: a sweep's driver may lack the
    workers' GPUs)."""
    import torch

    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if name in ("auto", "cpu"):
        return
    if m is None:
        raise ConfigError("model.device", name, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError("model.device", name, "must be 'auto' or 'cpu': this machine has no CUDA GPU")
    if int(m.group(1) or 0) >= count:
        raise ConfigError("model.device", name, f"must be 'cuda:0' to 'cuda:{count - 1}' (this machine's GPUs)")


def check_words(cfg, force: bool) -> None:
    """Name the prompt's words the model will not read: an error, or with --force a warning."""
    from .diffusion.load import model_path
    from .diffusion.vocab import load_tokenizer, model_texts, word_problems

    tokenizer = load_tokenizer(model_path(cfg.model.name))
    if tokenizer is None:
        return
    p = cfg.prompt
    problems = word_problems(tokenizer, model_texts(p.text, p.negative, p.view_template if p.view_dependent else None))
    if not problems:
        return
    what = "; ".join(problems) + ("; sjc captions lists the toy world's captions" if cfg.model.name == "toy" else "")
    if not force:
        raise ConfigError("prompt.text", p.text, f"must use only words model '{cfg.model.name}' reads: {what}; "
                                                 "--force runs anyway")
    print(f"sjc: warning: model '{cfg.model.name}' will not read all of prompt {p.text!r}: {what}", file=sys.stderr)


def finished_note(args, cfg) -> str | None:
    """For a resume of a run that has reached its steps: the line that says so (nothing will run)."""
    from .jobs import checkpoint_step

    step = checkpoint_step(Path(args.resume)) if args.resume else None
    if step is None or step < cfg.steps:
        return None
    return (f"sjc: run {args.resume} is finished ({step} of {cfg.steps} steps): nothing was run or rewritten; "
            f"--steps N (more than {step}) continues it")


def engine_command(args) -> int:
    """`sjc run` / `sjc image`: every check before anything is written, the run, then its scores."""
    from .configtools import to_json
    from .jobs import run_job

    cfg = resolve_config(args)
    check_device(cfg.model.device)
    check_words(cfg, args.force)
    if args.evaluate:
        from .evaluation.judges import parse_judge

        parse_judge(args.judge)  # a malformed spec is refused now; a judge that is not installed, a note later
    if args.dry_run:
        print(to_json(cfg))
        return 0
    note = finished_note(args, cfg)
    if note:
        print(note, file=sys.stderr)
        return 0
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar: the run's own bar is the one to read
    run_dir = run_job(cfg, dims=3 if args.command == "run" else 2)
    report(run_dir, args.judge if args.evaluate else None)
    print(json.dumps({"run_dir": str(run_dir)}))
    return 0


def report(run_dir: Path, judge: str | None) -> None:
    """Score the finished run (unless `judge` is None), add the scores to summary.json, print the summary."""
    from .evaluation.run_summary import score_run, summary_lines, write_scores

    result = score_run(run_dir, judge) if judge else None
    summary = write_scores(run_dir, result) if result else json.loads((run_dir / "summary.json").read_text())
    print("\n".join(summary_lines(run_dir, summary, result)))


def main(argv: list[str] | None = None) -> int:
    """The entry point of every `sjc` command: its exit code (2 for bad input, 141 when stdout was closed)."""
    try:
        try:
            return dispatch(argv)
        finally:  # also after argparse's exit from --help: buffered output meets a closed pipe here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        return closed_pipe_exit()


def dispatch(argv: list[str] | None) -> int:
    """Parse (`--help` prints from here) and run one command; bad input is one line on stderr."""
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command in ("run", "image"):
            return engine_command(args)
        return args.handler(args)
    except SJCError as err:
        print(f"sjc: error: {err}", file=sys.stderr)
        return 2


def closed_pipe_exit() -> int:
    """Stdout's reader went away (`sjc captions | head -3`): stop quietly, as Unix tools do on SIGPIPE (exit
    128 + 13). Stdout is pointed at /dev/null so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    raise SystemExit(main())
