"""`NoisekitStableDiffusion3Pipeline`: SD3 / SD3.5 with a noise plan (library, golden noise from a loaded
`NoisePromptNet` in `NoisePlan(npnet=net)`, NLG, seed search).

    pipe = NoisekitStableDiffusion3Pipeline.from_pipe(StableDiffusion3Pipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}))

Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import StableDiffusion3Pipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitStableDiffusion3Pipeline(SavesAsStock, StableDiffusion3Pipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with SD3's own arguments passed through."""
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
