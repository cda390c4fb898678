"""Where a sweep or a benchmark logs to MLflow, if anywhere: the one rule for `sjc sweep` and `sjc bench`.

  --mlflow-uri URI     that server or store
  --mlflow-uri none    no tracking (everything else, Parquet, ranking, run folders and reports, as usual)
  (nothing)            MLFLOW_TRACKING_URI, else `sqlite:///<folder>/mlflow.db`; no tracking, with a note, on a
                       machine where mlflow cannot be imported
Imports neither Ray nor MLflow (it only asks whether mlflow can be imported).
"""
import os
from pathlib import Path

from ..errors import ConfigError

OFF = ("none", "off")


def default_uri(folder: str | Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def resolve_uri(asked: str | None, folder: str | Path) -> tuple[str, str]:
    """(tracking URI, or "" for off; a note when tracking is off without having been asked to be)."""
    if asked is not None and asked.lower() in OFF:
        return "", ""
    if not mlflow_available():
        if asked:
            raise ConfigError("--mlflow-uri", asked, "'none' on a machine without mlflow (it cannot be imported)")
        return "", "mlflow is not installed: tracking is off (results.parquet, ranking and run folders as usual)"
    return asked or default_uri(folder), ""


def mlflow_available() -> bool:
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        return False
    return True
