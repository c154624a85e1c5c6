"""Family adapters: the one place that knows how a pipeline family encodes prompts, calls its denoiser, reads x0
from the denoiser's output, decodes latents and shapes them.

`adapter_for(pipe)` returns the adapter of a pipeline; the stages (sampler, golden noise, NLG, search, library)
talk to the adapter only, so a new family is one new adapter class registered in `ADAPTERS`. The UNet families
live in `unet_families.py`, the transformer families each in their own module. Every adapter takes and gives
canonical `(B, C, h, w)` latents; `pack`/`unpack` convert to the denoiser's layout.
"""

from .flux2_family import Flux2Adapter, Flux2KleinAdapter
from .flow_families import FluxAdapter, SD3Adapter
from .modular import classic_pipeline
from .pixart_family import PixArtAdapter
from .qwen_family import QwenImageAdapter
from .sana_family import SanaAdapter
from .unet_families import SDXLAdapter, UNetAdapter

# The first whose `matches` accepts a pipe serves it.
ADAPTERS = [SDXLAdapter, UNetAdapter, SD3Adapter, FluxAdapter, QwenImageAdapter, PixArtAdapter, SanaAdapter,
            Flux2Adapter, Flux2KleinAdapter]

# Pipeline classes noisekit knows and does not sample yet, each with why (checked along the class's MRO).
REFUSED = {
    "SanaSprintPipeline": "SANA-Sprint (few-step consistency sampling with embedded guidance) has no noisekit "
                          "adapter yet",
    "HunyuanDiTPipeline": "HunyuanDiT has no noisekit adapter yet",
    "Lumina2Pipeline": "Lumina 2 has no noisekit adapter yet",
    "ZImagePipeline": "Z-Image has no noisekit adapter yet",
}


def adapter_for(pipe):
    """The family adapter of `pipe`; one line naming the pipeline class when no family serves it."""
    pipe = classic_pipeline(pipe)  # a diffusers ModularPipeline: the classic pipeline of its components
    for base in type(pipe).__mro__:
        if base.__name__ in REFUSED:
            raise ValueError(f"{type(pipe).__name__} is not supported: {REFUSED[base.__name__]}.")
    for adapter_class in ADAPTERS:
        if adapter_class.matches(pipe):
            adapter = adapter_class(pipe)
            adapter.check()
            return adapter
    families = ", ".join(a.family for a in ADAPTERS)
    raise ValueError(f"noisekit has no family adapter for {type(pipe).__name__}; supported families: {families} "
                     f"(UNet pipelines with `encode_prompt`, StableDiffusion3Pipeline, FluxPipeline, "
                     "PixArtAlphaPipeline, PixArtSigmaPipeline, SanaPipeline, QwenImagePipeline, Flux2Pipeline, "
                     "Flux2KleinPipeline).")


def check_supported(pipe):
    adapter_for(pipe)


def encode(pipe, prompts, negative_prompt=None, guided=True, height=None, width=None):
    return adapter_for(pipe).encode(prompts, negative_prompt, guided, height, width)


def decode(pipe, latents, output_type="pil"):
    return adapter_for(pipe).decode(latents, output_type)
