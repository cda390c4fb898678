"""The results table of a sweep: one `ResultRow` per trial -> Parquet, the ranking, and metric-vs-parameter plots.

Columns: the scalar fields of ResultRow as they are, then its dict fields flattened with a prefix:
`param.<dotted key>` (the trial's whole flattened run config, as `--set` keys), `final.<metric>` (the last
report: step metrics, scores, `eval/...`), `artifact.<name>` (absolute paths). The swept keys, the rank metric
and its mode are stored in the Parquet schema's metadata, so `sjc results FILE` needs nothing else.
status: ok (ran to its last step), stopped (ASHA stopped it early; its folder holds the run as it stood),
failed (diverged, invalid config, or an error that outlived its retries; `failure` says why), interrupted (the
sweep stopped first: `--resume`). Ranking: ok and stopped trials by the rank metric, failed ones last. Plots: the
rank metric against each swept key, one PNG each, every status shown (`metric_figure`).
"""
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .space import resolved_params

META_KEY = b"sjc.sweep"
PREFIXES = {"params": "param.", "final": "final.", "artifacts": "artifact."}


@dataclass
class ResultRow:
    """One trial: the Parquet schema (dict fields become prefixed columns)."""

    trial_id: str
    status: str
    failure: str
    prompt: str
    seed: int
    model: str
    steps: int
    steps_total: int
    wall_seconds: float
    device_seconds: float
    gpu_seconds: float
    metric: str
    final_metric: float
    best_metric: float
    best_step: int
    run_dir: str
    params: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)

    def record(self) -> dict:
        flat = {k: v for k, v in dataclasses.asdict(self).items() if k not in PREFIXES}
        for name, prefix in PREFIXES.items():
            flat.update({prefix + k: _cell(v) for k, v in getattr(self, name).items()})
        return flat


def _cell(value):
    """Parquet cells must have one type per column: lists and dicts become JSON text."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def trial_status(last: dict, error: str, finished: bool = True) -> tuple[str, str]:
    """(ok | stopped | failed | interrupted, failure reason). `finished`: Tune ended the trial (terminated or
    errored), as opposed to an interrupted sweep that left it pending or running."""
    if error:
        return "failed", error
    status = last.get("sjc_status", "stopped")
    if status == "failed":
        return "failed", str(last.get("failure", ""))
    done = last.get("sjc_step", 0) >= last.get("steps_total", math.inf)
    if status == "ok" or done:
        return "ok", ""
    return ("stopped" if finished else "interrupted"), ""


def best_of(history: pd.DataFrame | None, metric: str, mode: str) -> tuple[float, int]:
    """Best value of `metric` over a trial's reports and the step it was reached (NaN, -1 if never)."""
    if history is None or metric not in history or history[metric].dropna().empty:
        return math.nan, -1
    col = pd.to_numeric(history[metric], errors="coerce").replace([math.inf, -math.inf], math.nan).dropna()
    if col.empty:
        return math.nan, -1
    idx = col.idxmax() if mode == "max" else col.idxmin()
    step = history.loc[idx, "sjc_step"] if "sjc_step" in history else -1
    return float(col[idx]), int(step)


def make_row(trial_id: str, params: dict, base: dict, last: dict, history, error: str, metric: str,
             mode: str, finished: bool = True) -> ResultRow:
    """A ResultRow from one trial's sampled params, last result and report history."""
    cfg = resolved_params(base, params)
    status, failure = trial_status(last, error, finished)
    best, best_step = best_of(history, metric, mode)
    final = {k: v for k, v in last.items() if _is_metric(k, v)}
    final_metric = last.get(metric, math.nan)
    return ResultRow(
        trial_id=trial_id, status=status, failure=failure, prompt=str(cfg.get("prompt.text", "")),
        seed=int(cfg.get("seed", 0)), model=str(cfg.get("model.name", "")), steps=int(last.get("sjc_step", 0)),
        steps_total=int(last.get("steps_total", cfg.get("steps", 0))),
        wall_seconds=float(last.get("time_total_s", math.nan)),
        device_seconds=float(last.get("device_seconds", math.nan)),
        gpu_seconds=float(last.get("gpu_seconds", math.nan)), metric=metric,
        final_metric=float(final_metric) if isinstance(final_metric, (int, float)) else math.nan,
        best_metric=best, best_step=best_step, run_dir=str(last.get("run_dir", "")), params=cfg, final=final,
        artifacts={k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("artifact/")})


def _is_metric(key: str, value) -> bool:
    skip = ("done", "pid", "timestamp", "training_iteration", "date", "hostname", "node_ip", "trial_id")
    return key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the table --------------------------------------------------------------------------------------------------
def write_table(rows: list[ResultRow], path: Path, swept: list[str], metric: str, mode: str,
                log_keys: list[str] | tuple = (), scheduler_mode: str = "max") -> Path:
    """Write the rows as Parquet with the sweep's metadata (swept keys, log-scale keys, rank metric, mode)."""
    frame = pd.DataFrame([r.record() for r in rows])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps({"swept": swept, "log_keys": list(log_keys),
                                                                    "metric": metric, "mode": mode,
                                                                    "scheduler_mode": scheduler_mode}).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """(frame, metadata) of a results Parquet file, or of `<dir>/results.parquet`."""
    p = Path(path)
    p = p / "results.parquet" if p.is_dir() else p
    if not p.is_file():
        from ..errors import ConfigError

        raise ConfigError("PATH", str(path), "a results.parquet file or a sweep folder that has one")
    table = pq.read_table(p)
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    return table.to_pandas(), meta


def rank(frame: pd.DataFrame, metric: str, mode: str, then: str = "best_metric", then_mode: str = "max") -> pd.DataFrame:
    """Trials best first by `metric` (a final.* column or a ResultRow column), ties and trials without it (e.g.
    stopped before the final evaluation) by `then`, then by trial id; failed trials last."""
    def key(name: str, how: str) -> pd.Series:
        col = name if name in frame else f"final.{name}"
        k = pd.to_numeric(frame[col], errors="coerce") if col in frame else pd.Series(math.nan, index=frame.index)
        k = k.replace([math.inf, -math.inf], math.nan)
        return k if how == "min" else -k

    order = frame.assign(_failed=frame["status"].eq("failed"), _key=key(metric, mode), _then=key(then, then_mode))
    ties = ["trial_id"] if "trial_id" in frame else []  # the same order however the rows came (e.g. on resume)
    order = order.sort_values(["_failed", "_key", "_then", *ties], na_position="last", kind="stable")
    return order.drop(columns=["_failed", "_key", "_then"]).reset_index(drop=True)


def rank_metric(frame: pd.DataFrame, wanted: str | None, fallback: str) -> str:
    """`wanted` if some trial reported it, else `fallback` (the scheduler's metric)."""
    if wanted and any(c in frame and frame[c].notna().any() for c in (wanted, f"final.{wanted}")):
        return wanted
    return fallback


def rank_settings(frame: pd.DataFrame, swept: list[str], metric: str, mode: str, over: list[str],
                  per: str | None = None) -> pd.DataFrame:
    """Settings (the swept keys other than `over`) ranked by the metric's mean over the `over` keys' values
    (e.g. prompts or seeds), best first; with `per`, ranked within each value of that swept key. Columns: the
    settings' keys, mean, min, n (trials with the metric). Failed trials and trials without the metric (stopped
    before the final evaluation) are left out, so `n` says how many values each mean covers; settings with fewer
    than the most values (of their `per` group) rank after the complete ones."""
    from ..errors import ConfigError

    for key in [*over, *([per] if per else [])]:
        if key not in swept:
            raise ConfigError("--average-over/--per", key, f"a swept key: {', '.join(swept) or '(none)'}")
    if per in over:
        raise ConfigError("--per", per, "a swept key that is not averaged over (--average-over)")
    keys = [k for k in swept if k not in over]
    col = metric if metric in frame else f"final.{metric}"
    if col not in frame or not keys:
        return pd.DataFrame(columns=[*keys, "mean", "min", "n"])
    ok = frame[frame["status"].ne("failed")].assign(_m=pd.to_numeric(frame[col], errors="coerce"))
    ok = ok[ok["_m"].replace([math.inf, -math.inf], math.nan).notna()]
    table = ok.groupby([f"param.{k}" for k in keys], dropna=False)["_m"].agg(["mean", "min", "count"])
    table = table.reset_index().rename(columns=lambda c: c.removeprefix("param.")).rename(columns={"count": "n"})
    full = table.groupby(per)["n"].transform("max") if per else table["n"].max()
    table = table.assign(_partial=table["n"] < full)
    table = table.sort_values(["_partial", "mean"], ascending=[True, mode == "min"], kind="stable")
    if per:
        table = table.sort_values(per, kind="stable")
    return table.drop(columns="_partial").reset_index(drop=True)


def best_rows(table: pd.DataFrame, per: str | None = None) -> dict[str, dict]:
    """The best row of `rank_settings` (per value of `per`; else 'best') as {swept key: value}."""
    keys = [c for c in table.columns if c not in ("mean", "min", "n", per)]
    rows = (table.groupby(per, sort=False).head(1) if per else table.head(1)).astype(object)
    return {str(r[per]) if per else "best": {k: r[k] for k in keys} for r in rows.to_dict("records")}


def best_settings(table: pd.DataFrame, per: str | None = None) -> dict[str, str]:
    """`best_rows` as `--set KEY=VALUE ...` arguments."""
    import shlex

    return {name: " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in row.items())
            for name, row in best_rows(table, per).items()}


def bench_set_for(table: pd.DataFrame) -> str:
    """The best row per guidance kind of `rank_settings(..., per='guidance.kind')` as `sjc bench --methods ...
    --set-for METHOD:KEY=VALUE ...` (the bench names kind paas 'sjc'), methods in the bench's order, so SJC comes
    first and the report pairs every other kind against it."""
    import shlex

    from ..evaluation.benchmark import METHODS

    order, method = list(METHODS.values()), {kind: name for name, kind in METHODS.items()}
    best = sorted(best_rows(table, "guidance.kind").items(),
                  key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    flags = [f"--set-for {shlex.quote(f'{method.get(kind, kind)}:{k}={v}')}" for kind, row in best
             for k, v in row.items()]
    return " ".join([f"--methods {','.join(method.get(kind, kind) for kind, _ in best)}", *flags])


def top_table(frame: pd.DataFrame, swept: list[str], metric: str, k: int = 10) -> str:
    """A plain-text table of the k best trials."""
    cols = ["trial_id", "status", *[f"param.{s}" for s in swept], metric if metric in frame else f"final.{metric}",
            "best_metric", "steps", "wall_seconds"]
    cols = [c for c in dict.fromkeys(cols) if c in frame]
    view = frame[cols].head(k).rename(columns=lambda c: c.removeprefix("param.").removeprefix("final."))
    view.index = range(1, len(view) + 1)
    return view.to_string(float_format=lambda v: f"{v:.4g}")


STATUS_MARKERS = (("ok", "o"), ("stopped", "s"), ("interrupted", "^"), ("failed", "x"))


def plot_metric(frame: pd.DataFrame, swept: list[str], metric: str, out_dir: Path, log_keys=()) -> list[Path]:
    """One PNG per swept key (`<metric>_vs_<key>.png`, see `metric_figure`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in swept:
        if f"param.{key}" not in frame:
            continue
        fig = metric_figure(frame, key, metric, log_keys)
        paths.append(out_dir / f"{metric.replace('/', '_')}_vs_{key}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def metric_figure(frame: pd.DataFrame, key: str, metric: str, log_keys=()):
    """The metric of every trial against the key's value, one marker per status (legend: status and count).
    When some trials lack the metric (stopped before the final evaluation), a second panel plots every trial's
    best intermediate score (`best_metric`), so stopped trials show too. Log x axis for `log_keys` and for
    numbers spanning more than 10x."""
    import matplotlib.pyplot as plt

    panels = [(metric, _numbers(frame, metric))]
    if panels[0][1].isna().any() and "best_metric" in frame:
        name = str(frame["metric"].dropna().iloc[0]) if "metric" in frame and frame["metric"].notna().any() else ""
        panels.append((f"best {name}".strip(), _numbers(frame, "best_metric")))
    x = frame[f"param.{key}"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(4.5, 3.2 * len(panels)), dpi=110, squeeze=False)
    for ax, (label, y) in zip(axes[:, 0], panels):
        _scatter(ax, frame, x, y)
        ax.set_ylabel(label)
        if key in log_keys or _spans_decade(x):
            ax.set_xscale("log")
    axes[-1, 0].set_xlabel(key)
    fig.tight_layout()
    return fig


def _numbers(frame: pd.DataFrame, name: str) -> pd.Series:
    col = name if name in frame else f"final.{name}"
    y = pd.to_numeric(frame[col], errors="coerce") if col in frame else pd.Series(math.nan, index=frame.index)
    return y.replace([math.inf, -math.inf], math.nan)


def _scatter(ax, frame: pd.DataFrame, x: pd.Series, y: pd.Series) -> None:
    for status, marker in STATUS_MARKERS:
        m = frame["status"].eq(status) & y.notna()
        if m.any():
            ax.scatter(x[m].astype(str) if x.dtype == object else x[m], y[m], marker=marker,
                       label=f"{status} ({int(m.sum())})")
    if ax.collections:
        ax.legend(fontsize=7)


def _spans_decade(x: pd.Series) -> bool:
    """Positive numbers whose largest is more than 10x the smallest."""
    v = pd.to_numeric(x, errors="coerce") if x.dtype != object else pd.Series(dtype=float)
    v = v.dropna()
    return len(v) > 1 and v.min() > 0 and v.max() > 10 * v.min()
