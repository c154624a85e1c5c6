"""`NoisekitFluxPipeline`: FLUX.1 (dev, schnell) with a noise plan (library, golden noise from a loaded
`NoisePromptNet` in `NoisePlan(npnet=net)`, NLG, seed search).

    pipe = NoisekitFluxPipeline.from_pipe(FluxPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}), num_inference_steps=4)

Seeds make canonical `(C, h, w)` noise, packed as FluxPipeline packs it. Also loadable as
`DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import FluxPipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitFluxPipeline(SavesAsStock, FluxPipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with FLUX's own arguments passed through
        (`guidance_scale` is FLUX dev's embedded guidance)."""
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
