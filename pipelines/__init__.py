"""diffusers pipelines that add a noise plan to the stock SD and SDXL pipelines."""

from .pipeline_noisekit_sd import NoisekitStableDiffusionPipeline
from .pipeline_noisekit_sdxl import NoisekitStableDiffusionXLPipeline

__all__ = ["NoisekitStableDiffusionPipeline", "NoisekitStableDiffusionXLPipeline"]


def pipeline_class_for(stock_name):
    """The noisekit class that extends the stock pipeline class `stock_name` (as a saved folder names it)."""
    for cls in (NoisekitStableDiffusionPipeline, NoisekitStableDiffusionXLPipeline):
        if stock_name in (cls.__name__, cls.stock_class().__name__):
            return cls
    raise ValueError(f"noisekit has no pipeline class for {stock_name!r}; it extends StableDiffusionPipeline and "
                     "StableDiffusionXLPipeline.")
