"""The distributed layer: Ray actors that hold SJC optimisers, Ray Tune sweeps, MLflow tracking, Parquet results.

The only package of sjc_dist that imports Ray, MLflow or pandas (and only inside its modules, never here).
See README.md in this folder: how trials reach workers, how memory stays bounded, the sweep YAML, scale-out.
"""
