"""Subcommands beyond the engine's own `run` and `image`: each layer that adds commands exposes
`register(subparsers)` in its `cli_commands` module (sweep/results: distributed; bench/evaluate: evaluation).
Imported lazily so `sjc run` never imports Ray or MLflow."""
import importlib

PROVIDERS = ("sjc_dist.distributed.cli_commands", "sjc_dist.evaluation.cli_commands")


def add_subcommands(sub) -> None:
    """Add the optional subcommands to the `sjc` parser (each sets `handler`)."""
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
