"""Subcommands beyond the engine's own `run` and `image`: `captions` and `presets` (what the toy world knows and
which configs ship), and each layer's own: a layer exposes `register(subparsers)` in its `cli_commands` module
(sweep/results: distributed; bench/evaluate: evaluation). Imported lazily so `sjc run` never imports Ray or MLflow."""
import importlib
import inspect

PROVIDERS = ("sjc_dist.distributed.cli_commands", "sjc_dist.evaluation.cli_commands")


def add_subcommands(sub) -> None:
    """Add the optional subcommands to the `sjc` parser (each sets `handler`)."""
    sub.add_parser("captions", help="list the toy world's captions (the prompts the toy model and judge know)"
                   ).set_defaults(handler=captions_command)
    sub.add_parser("presets", help="list the shipped config presets (--config NAME)").set_defaults(
        handler=presets_command)
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)


def toy_captions() -> list[str]:
    """Every caption of the toy world: what each public `*captions()` function of toyworld/shapes.py returns
    (`captions()`, and any set of objects added there later), in order, once each."""
    shapes = importlib.import_module("sjc_dist.toyworld.shapes")
    found: list[str] = []
    for name, fn in vars(shapes).items():
        if name.endswith("captions") and not name.startswith("_") and inspect.isfunction(fn) and takes_no_args(fn):
            found += fn()
    return list(dict.fromkeys(found))


def takes_no_args(fn) -> bool:
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in inspect.signature(fn).parameters.values())


def captions_command(args) -> int:
    print("\n".join(toy_captions()))
    return 0


def presets_command(args) -> int:
    """One line per shipped preset: its name and the first line of its comment."""
    from .config import PRESETS

    for path in sorted(PRESETS.glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{path.stem:<10} {first}")
    return 0
