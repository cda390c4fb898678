"""Guidance: image-space updates from a denoiser (SJC's PAAS, DreamFusion's SDS). Knows denoisers, not 3D."""
from .base import GUIDANCES, Guidance, GuidanceConfig, GuidanceOutput, chain, make_guidance

__all__ = ["GUIDANCES", "Guidance", "GuidanceConfig", "GuidanceOutput", "chain", "make_guidance"]
