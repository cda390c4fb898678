"""What a finished sweep reports: `SweepOutcome` (what it left), `summary.json` (status counts, wall time over
every session of the sweep, model loads and scene-steps over every worker that ever ran, the best trial), and
the headline `sjc sweep` prints (trials, statuses, time, the best trial and where to look: its views.png,
ranking.txt, the MLflow command). No Ray here.
"""
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SweepOutcome:
    """What a finished sweep left behind."""

    sweep_dir: Path
    table: Path
    rows: list
    ranking: str
    metric: str
    workers: list = field(default_factory=list)
    seconds: float = 0.0
    mlflow_uri: str = ""
    parent_run_id: str = ""
    summary: dict = field(default_factory=dict)
    runs_url: str = ""
    notes: list = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return any(r.status == "interrupted" for r in self.rows)

    @property
    def model_loads(self) -> int:
        return sum(w.get("loads", 0) for w in self.workers)


def sessions(sweep_dir: Path, resume: bool, started: float, seconds: float) -> list[dict]:
    """This session appended to those an earlier summary.json recorded (a resumed sweep keeps its history)."""
    old = []
    path = Path(sweep_dir) / "summary.json"
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text()).get("sessions", [])
        except ValueError:
            old = []
    return [*old, {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                   "seconds": round(seconds, 3), "resumed": resume}]


def build_summary(name: str, ranked, metric: str, workers: list, history: list[dict], rows: list) -> dict:
    """summary.json: counts over the whole sweep (all sessions, all worker incarnations)."""
    best = ranked.iloc[0].to_dict() if len(ranked) else {}
    counts = ranked["status"].value_counts().to_dict() if len(ranked) else {}
    return {"name": name, "metric": metric, "trials": len(rows), "status": counts,
            "seconds": sum(s["seconds"] for s in history), "sessions": history,
            "model_loads": sum(w.get("loads", 0) for w in workers),
            "scene_steps": sum(w.get("scene_steps", 0) for w in workers),
            "actors": len(workers), "workers": workers,
            "best_trial": best.get("trial_id"), "best_dir": best.get("run_dir", ""),
            "best": {k.removeprefix("final."): v for k, v in best.items() if k.startswith("final.")}}


def headline(outcome: SweepOutcome) -> str:
    """The lines `sjc sweep` ends with: the counts, the ranking, the best trial and where its files are."""
    s = outcome.summary
    status = ", ".join(f"{n} {k}" for k, n in sorted(s.get("status", {}).items()))
    counts = (f"sweep {s.get('name') or outcome.sweep_dir.name}: {s.get('trials', 0)} trials ({status}), "
              f"{_duration(s.get('seconds', outcome.seconds))}, {len(outcome.workers)} worker(s), "
              f"{outcome.model_loads} model load(s), {s.get('scene_steps', 0)} scene-steps")
    lines = [counts, f"\nranked by {outcome.metric} (ranking.txt):", outcome.ranking, ""]
    value = s.get("best", {}).get(outcome.metric)
    if s.get("best_trial"):
        shown = f"{outcome.metric} {value:.4g}" if isinstance(value, float) and math.isfinite(value) else ""
        lines.append(f"best trial: {s['best_trial']} {shown}".rstrip())
        views = Path(s.get("best_dir") or "") / "views.png"
        if views.is_file():
            lines.append(f"  its views:  {views}")
    lines.append(f"  ranking:    {outcome.sweep_dir / 'ranking.txt'}   (plots: sjc results {outcome.sweep_dir})")
    lines += mlflow_lines(outcome)
    return "\n".join(lines + [f"note: {n}" for n in outcome.notes])


def mlflow_lines(outcome: SweepOutcome) -> list[str]:
    if not outcome.mlflow_uri:
        return ["  MLflow:     off"]
    if outcome.mlflow_uri.startswith("sqlite:"):
        return [f"  MLflow:     mlflow ui --backend-store-uri {outcome.mlflow_uri}",
                f"              then open {outcome.runs_url}"]
    return [f"  MLflow:     {outcome.runs_url}"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
