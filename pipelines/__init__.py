"""diffusers pipelines that add a noise plan to the stock SD, SDXL, SD3, FLUX.1, FLUX.2, Qwen-Image, PixArt and SANA
pipelines."""

from .pipeline_noisekit_flux import NoisekitFluxPipeline
from .pipeline_noisekit_flux2 import NoisekitFlux2Pipeline
from .pipeline_noisekit_flux2_klein import NoisekitFlux2KleinPipeline
from .pipeline_noisekit_pixart_alpha import NoisekitPixArtAlphaPipeline
from .pipeline_noisekit_pixart_sigma import NoisekitPixArtSigmaPipeline
from .pipeline_noisekit_qwenimage import NoisekitQwenImagePipeline
from .pipeline_noisekit_sana import NoisekitSanaPipeline
from .pipeline_noisekit_sd import NoisekitStableDiffusionPipeline
from .pipeline_noisekit_sd3 import NoisekitStableDiffusion3Pipeline
from .pipeline_noisekit_sdxl import NoisekitStableDiffusionXLPipeline

__all__ = ["NoisekitFlux2KleinPipeline", "NoisekitFlux2Pipeline", "NoisekitFluxPipeline", "NoisekitQwenImagePipeline",
           "NoisekitPixArtAlphaPipeline", "NoisekitPixArtSigmaPipeline", "NoisekitSanaPipeline",
           "NoisekitStableDiffusion3Pipeline", "NoisekitStableDiffusionPipeline", "NoisekitStableDiffusionXLPipeline"]
CLASSES = (NoisekitStableDiffusionPipeline, NoisekitStableDiffusionXLPipeline, NoisekitStableDiffusion3Pipeline,
           NoisekitFluxPipeline, NoisekitQwenImagePipeline, NoisekitFlux2Pipeline, NoisekitFlux2KleinPipeline,
           NoisekitPixArtAlphaPipeline, NoisekitPixArtSigmaPipeline, NoisekitSanaPipeline)


def pipeline_class_for(stock_name):
    """The noisekit class that extends the stock pipeline class `stock_name` (as a saved folder names it)."""
    for cls in CLASSES:
        if stock_name in (cls.__name__, cls.stock_class().__name__):
            return cls
    raise ValueError(f"noisekit has no pipeline class for {stock_name!r}; it extends StableDiffusionPipeline, "
                     "StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline, QwenImagePipeline, "
                     "Flux2Pipeline, Flux2KleinPipeline, PixArtAlphaPipeline, PixArtSigmaPipeline and SanaPipeline.")
