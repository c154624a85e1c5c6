"""diffusers pipelines that add a noise plan to the stock SD, SDXL, SD3 and FLUX.1 pipelines."""

from .pipeline_noisekit_flux import NoisekitFluxPipeline
from .pipeline_noisekit_sd import NoisekitStableDiffusionPipeline
from .pipeline_noisekit_sd3 import NoisekitStableDiffusion3Pipeline
from .pipeline_noisekit_sdxl import NoisekitStableDiffusionXLPipeline

__all__ = ["NoisekitFluxPipeline", "NoisekitStableDiffusion3Pipeline", "NoisekitStableDiffusionPipeline",
           "NoisekitStableDiffusionXLPipeline"]
CLASSES = (NoisekitStableDiffusionPipeline, NoisekitStableDiffusionXLPipeline, NoisekitStableDiffusion3Pipeline,
           NoisekitFluxPipeline)


def pipeline_class_for(stock_name):
    """The noisekit class that extends the stock pipeline class `stock_name` (as a saved folder names it)."""
    for cls in CLASSES:
        if stock_name in (cls.__name__, cls.stock_class().__name__):
            return cls
    raise ValueError(f"noisekit has no pipeline class for {stock_name!r}; it extends StableDiffusionPipeline, "
                     "StableDiffusionXLPipeline, StableDiffusion3Pipeline and FluxPipeline.")
