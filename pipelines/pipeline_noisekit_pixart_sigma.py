"""`NoisekitPixArtSigmaPipeline`: PixArt-Sigma with a noise plan (NLG, seed search).

    pipe = NoisekitPixArtSigmaPipeline.from_pipe(PixArtSigmaPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}))

Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import PixArtSigmaPipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitPixArtSigmaPipeline(SavesAsStock, PixArtSigmaPipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with PixArt-Sigma's own arguments passed through."""
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
