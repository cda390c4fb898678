"""Guidance: image-space updates from a denoiser (SJC's PAAS, DreamFusion's SDS, CSD, NFSD, ISM; standard CFG or
Perp-Neg). Knows denoisers, not 3D."""
from .base import GUIDANCES, KINDS, Guidance, GuidanceConfig, GuidanceOutput, chain, make_guidance
from .passes import Request, drive

__all__ = ["GUIDANCES", "KINDS", "Guidance", "GuidanceConfig", "GuidanceOutput", "Request", "chain", "drive",
           "make_guidance"]
