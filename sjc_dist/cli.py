"""The `sjc` command. Parses, validates and dispatches; no logic of its own.

  sjc run    --prompt "a red cube"            3D: a voxel field through SJC (or SDS)
  sjc image  --prompt "a red cube"            2D check: theta is an image, f is the identity
Every config field is settable with `--set section.key=value` (listed in `sjc run --help`).
"""
import argparse
import json
import sys
from pathlib import Path

from .configtools import help_lines, load_yaml
from .errors import SJCError

SHORTCUTS = {"prompt": "prompt.text", "model": "model.name", "steps": "steps", "seed": "seed",
             "out": "output.dir", "device": "model.device", "guidance": "guidance.kind"}


def _engine_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    from .config import RunConfig

    p = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="config fields (each settable with --set KEY=VALUE):\n"
                              + "\n".join(help_lines(RunConfig)))
    p.add_argument("--config", default=None,
                   help="preset name (toy, sd, empirical) or YAML file; default: toy, or the resumed run's config")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set guidance.weight=50")
    p.add_argument("--prompt", help="shortcut for --set prompt.text=...")
    p.add_argument("--model", help="shortcut for --set model.name=... (toy, empirical, a folder, a cached repo id)")
    p.add_argument("--steps", help="shortcut for --set steps=...")
    p.add_argument("--seed", help="shortcut for --set seed=...")
    p.add_argument("--out", help="shortcut for --set output.dir=...")
    p.add_argument("--device", help="shortcut for --set model.device=... (auto, cpu, cuda, cuda:N)")
    p.add_argument("--guidance", help="shortcut for --set guidance.kind=... (paas or sds)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sjc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _engine_parser(sub, "run", "optimise a 3D voxel field for a prompt (SJC or SDS)")
    _engine_parser(sub, "image", "the paper's 2D check: optimise an image directly")
    from . import commands

    commands.add_subcommands(sub)
    return parser


def resolve_config(args: argparse.Namespace):
    """Preset/YAML (or the resumed run's config.json) + shortcuts + --set, validated."""
    from .config import load_config, preset_path

    if args.resume:
        data = load_yaml(Path(args.resume) / "config.json")
        data.setdefault("output", {})["dir"] = str(Path(args.resume))
    else:
        data = load_yaml(preset_path(args.config or "toy"))
    for flag, key in SHORTCUTS.items():  # taken verbatim: a prompt "yes" stays the string "yes"
        if getattr(args, flag) is not None:
            section, _, leaf = key.rpartition(".")
            (data.setdefault(section, {}) if section else data)[leaf] = getattr(args, flag)
    return load_config(data, args.sets)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "image"):
            from .configtools import to_json
            from .jobs import run_job

            cfg = resolve_config(args)
            if args.dry_run:
                print(to_json(cfg))
                return 0
            run_dir = run_job(cfg, dims=3 if args.command == "run" else 2)
            print(json.dumps({"run_dir": str(run_dir)}))
            return 0
        return args.handler(args)
    except SJCError as err:
        print(f"sjc: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
