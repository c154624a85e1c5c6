"""diffusers pipelines that add a noise plan to the stock SD and SDXL pipelines."""

from .pipeline_noisekit_sd import NoisekitStableDiffusionPipeline
from .pipeline_noisekit_sdxl import NoisekitStableDiffusionXLPipeline

__all__ = ["NoisekitStableDiffusionPipeline", "NoisekitStableDiffusionXLPipeline"]
