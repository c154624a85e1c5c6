"""`NoisekitFlux2Pipeline`: FLUX.2 dev with a noise plan (NLG, seed search).

    pipe = NoisekitFlux2Pipeline.from_pipe(Flux2Pipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}), num_inference_steps=28)

Seeds make canonical noise on FLUX.2's patchified grid `(128, H/16, W/16)`: exactly the stock pipeline's own draw
for the same seed (float32). Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline=...)`.
"""

import torch
from diffusers import Flux2Pipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitFlux2Pipeline(SavesAsStock, Flux2Pipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with FLUX.2's own arguments passed through
        (`guidance_scale` is FLUX.2 dev's embedded guidance, 4.0 by default as in the stock pipeline)."""
        kwargs.setdefault("guidance_scale", 4.0)
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
