"""Evaluation of 3D results: CLIP judges, CLIP score and R-Precision, toy-world ground truth, statistics,
and the SJC-vs-SDS benchmark's planning and report.

Metric functions take embeddings or tensors only (testable on hand-built vectors); model loading lives in
`judges.py` and `saved.py`. Nothing here imports Ray, MLflow or pandas (see `sjc_dist.distributed.bench`).
"""
