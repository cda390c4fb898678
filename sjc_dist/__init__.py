"""sjc_dist: Score Jacobian Chaining (SJC) at scale: 2D diffusion models -> 3D voxel fields.

Imports nothing heavy at import time: no Ray, no MLflow, no CUDA. Public names load lazily.
"""
__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "config", "load_config": "config", "SJCRun": "optim.run", "optimize": "optim.loop",
    "run_job": "jobs", "load_model": "diffusion.load", "ModelConfig": "diffusion.load",
    "Cond": "diffusion.denoiser", "Denoiser": "diffusion.denoiser", "score": "diffusion.denoiser",
    "VPDenoiser": "diffusion.vp_adapter", "CFGDenoiser": "diffusion.cfg", "EmpiricalDenoiser": "diffusion.empirical",
    "VoxelField": "scene.field", "render": "scene.render", "make_guidance": "guidance.base",
    "ConfigError": "errors", "DivergenceError": "errors", "ModelNotFoundError": "errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sjc_dist' has no attribute {name!r}")
