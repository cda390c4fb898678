"""The numbers of a benchmark report, from its rows (one dict per object per judge, the EvalRow fields).

The statistical unit is the prompt: an object's value is first averaged over seeds, per prompt and method,
then methods are summarised by the mean over prompts with a percentile-bootstrap 95% CI (stats.py), and
compared pairwise per prompt (the first method against each other one: mean difference, its CI, the Wilcoxon
signed-rank and paired-bootstrap p-values, wins/ties/losses of the first method, a win being a better value:
higher, or lower for colour error). Ground-truth metrics do not depend on the
judge; they are read from the first judge's rows and labelled judge 'truth'; so are the model signals (the
denoiser fits, labelled judge 'model'). Spearman's rho between CLIP score and IoU is over objects (not
prompts), per judge and method. Where truth exists, every signal's agreement with the 3D IoU (within-prompt
Spearman across seeds and methods, validation.py) is reported beside its verdict. Plain Python: no pandas here.
"""
import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np

from .stats import bootstrap_ci, paired_test, spearman
from .validation import Agreement, agreement

CLIP_METRICS = ("clip_score", "r_precision", "clip_worst", "rp_distractors", "clip_prob")
MODEL_METRICS = ("fit", "judge_fit")
TRUTH_METRICS = ("iou", "silhouette_iou", "ssim", "psnr", "depth_error", "iou_centred", "color_error", "toy_r1")
LOWER_IS_BETTER = {"color_error", "depth_error"}
TRUTH, MODEL = "truth", "model"
AGREEMENT_TRUTH = "iou"  # the truth metric every signal's agreement is measured against


@dataclass(frozen=True)
class MetricKey:
    """Which metric, as seen by which judge ('truth' for the ground-truth metrics)."""

    judge: str
    metric: str

    @property
    def source_judge(self) -> str | None:
        return None if self.judge in (TRUTH, MODEL) else self.judge

    @property
    def is_truth(self) -> bool:
        return self.judge == TRUTH


def judges_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["judge"] for r in rows))


def methods_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def has_values(rows: list[dict], metric: str) -> bool:
    return any(math.isfinite(r.get(metric, math.nan)) for r in rows)


def metric_keys(rows: list[dict]) -> list[MetricKey]:
    """Every (judge, metric) with at least one finite value: CLIP metrics per judge, then the truth ones."""
    judges = judges_of(rows)
    keys = [MetricKey(j, m) for j in judges for m in CLIP_METRICS]
    first = [r for r in rows if judges and r["judge"] == judges[0]]
    keys += [MetricKey(MODEL, m) for m in MODEL_METRICS if has_values(first, m)]
    keys += [MetricKey(TRUTH, m) for m in TRUTH_METRICS if has_values(first, m)]
    return [k for k in keys if has_values(select(rows, k), k.metric)]


def select(rows: list[dict], key: MetricKey, method: str | None = None) -> list[dict]:
    """The rows that carry `key` (the first judge's rows for truth metrics), optionally of one method."""
    judge = key.source_judge or (judges_of(rows) or [None])[0]
    return [r for r in rows if r["judge"] == judge and (method is None or r["method"] == method)]


def per_prompt(rows: list[dict], key: MetricKey, method: str) -> dict[str, float]:
    """prompt -> mean over seeds of the metric (finite values only; prompts without any are left out)."""
    values: dict[str, list[float]] = {}
    for r in select(rows, key, method):
        v = r.get(key.metric, math.nan)
        if math.isfinite(v):
            values.setdefault(r["prompt"], []).append(v)
    return {p: float(np.mean(v)) for p, v in values.items()}


def method_means(rows: list[dict], rng: np.random.Generator) -> list[dict]:
    """One record per (judge, metric, method): mean over prompts and its 95% bootstrap CI."""
    out = []
    for key in metric_keys(rows):
        for method in methods_of(rows):
            values = list(per_prompt(rows, key, method).values())
            ci = bootstrap_ci(values, rng)
            n_obj = sum(math.isfinite(r.get(key.metric, math.nan)) for r in select(rows, key, method))
            out.append({"judge": key.judge, "metric": key.metric, "method": method, "mean": ci.mean,
                        "low": ci.low, "high": ci.high, "prompts": ci.n, "objects": n_obj})
    return out


def paired_comparisons(rows: list[dict], rng: np.random.Generator) -> list[dict]:
    """The first method against each other one, per (judge, metric), on the prompts both have."""
    methods = methods_of(rows)
    out = []
    for key in metric_keys(rows):
        ref = per_prompt(rows, key, methods[0])
        for other in methods[1:]:
            alt = per_prompt(rows, key, other)
            common = [p for p in ref if p in alt]
            res = paired_test([ref[p] for p in common], [alt[p] for p in common], rng)
            if key.metric in LOWER_IS_BETTER:  # wins and losses from the first method's side
                res = dataclasses.replace(res, wins=res.losses, losses=res.wins)
            better = methods[0] if (res.mean_diff > 0) != (key.metric in LOWER_IS_BETTER) else other
            out.append({"judge": key.judge, "metric": key.metric, "a": methods[0], "b": other, **asdict(res),
                        "better": better if res.mean_diff != 0 and math.isfinite(res.mean_diff) else "-"})
    return out


def signal_agreements(rows: list[dict], seed: int = 0) -> dict[MetricKey, Agreement]:
    """Each non-truth metric's agreement with the 3D IoU over this benchmark's objects (empty without truth)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key in metric_keys(rows):
        sub = select(rows, key)
        if not key.is_truth and has_values(sub, AGREEMENT_TRUTH):
            out[key] = agreement(sub, key.metric, AGREEMENT_TRUTH, ("prompt",), ("prompt", "method"), rng)
    return out


def object_records(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """One record per object (run) with its truth, model signals and every judge's CLIP signals (named
    'JUDGE/metric'), for validation.py; and the signal names."""
    recs: dict[tuple, dict] = {}
    signals: list[str] = list(MODEL_METRICS)
    for r in rows:
        obj = (r.get("run_dir"), r["prompt"], r["method"], r.get("seed"))
        rec = recs.setdefault(obj, {k: r.get(k, math.nan) for k in (*TRUTH_METRICS, *MODEL_METRICS)})
        rec.update(prompt=r["prompt"], method=r["method"])
        for m in CLIP_METRICS:
            rec[f"{r['judge']}/{m}"] = r.get(m, math.nan)
            signals.append(f"{r['judge']}/{m}")
    return list(recs.values()), list(dict.fromkeys(signals))


def centred_by_prompt(rows: list[dict], metric: str) -> list[float]:
    """Each row's value minus the mean of its prompt's rows (the prompt's own offset removed)."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r[metric])
    means = {p: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for p, v in groups.items()}
    return [r[metric] - means[r["prompt"]] for r in rows]


def correlations(rows: list[dict]) -> list[dict]:
    """Spearman rho (and p) between each judge's CLIP score and IoU, over objects, per method and overall:
    across prompts as they are, and within prompts (each prompt's mean removed from both first; CLIP scores
    of different prompts have different baselines, so only the latter says whether CLIP ranks the results of
    one prompt as the truth does)."""
    out = []
    for judge in judges_of(rows):
        mine = [r for r in rows if r["judge"] == judge]
        if not has_values(mine, "iou"):
            continue
        for method in [*methods_of(rows), "all"]:
            sub = [r for r in mine if method == "all" or r["method"] == method]
            rho, p = spearman([r["clip_score"] for r in sub], [r["iou"] for r in sub])
            rho_w, p_w = spearman(centred_by_prompt(sub, "clip_score"), centred_by_prompt(sub, "iou"))
            out.append({"judge": judge, "method": method, "rho": rho, "p": p, "rho_within": rho_w,
                        "p_within": p_w, "objects": len(sub)})
    return out


def ranked_prompts(rows: list[dict], key: MetricKey, method: str, k: int) -> tuple[list[str], list[str]]:
    """The k best and k worst prompts of a method by the metric (best first; worst last-first)."""
    scores = per_prompt(rows, key, method)
    order = sorted(scores, key=lambda p: scores[p], reverse=key.metric not in LOWER_IS_BETTER)
    k = min(k, len(order) // 2) if len(order) > 1 else len(order)
    return order[:k], order[::-1][:k]


def per_prompt_table(rows: list[dict], key: MetricKey) -> list[dict]:
    """prompt -> each method's seed-mean value of the metric (prompts in benchmark order)."""
    methods = methods_of(rows)
    values = {m: per_prompt(rows, key, m) for m in methods}
    prompts = list(dict.fromkeys(r["prompt"] for r in sorted(rows, key=lambda r: r["prompt_index"])))
    return [{"prompt": p, **{m: values[m].get(p, math.nan) for m in methods}} for p in prompts]


def primary_key(rows: list[dict]) -> MetricKey:
    """The metric the grids and headline use: the first judge's CLIP score."""
    return MetricKey(judges_of(rows)[0], "clip_score")
