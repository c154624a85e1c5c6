"""`NoisekitFlux2KleinPipeline`: FLUX.2 klein with a noise plan (NLG, seed search).

    pipe = NoisekitFlux2KleinPipeline.from_pipe(Flux2KleinPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}), guidance_scale=4.0)

Seeds make canonical noise on FLUX.2's patchified grid, the stock pipeline's own draw for the same seed (float32).
Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import Flux2KleinPipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitFlux2KleinPipeline(SavesAsStock, Flux2KleinPipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with klein's own arguments passed through (`guidance_scale`
        is true CFG's scale, 4.0 by default as in the stock pipeline; `negative_prompt` replaces its "")."""
        kwargs.setdefault("guidance_scale", 4.0)
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
