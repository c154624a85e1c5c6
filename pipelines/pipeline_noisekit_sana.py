"""`NoisekitSanaPipeline`: SANA with a noise plan (NLG, seed search).

    pipe = NoisekitSanaPipeline.from_pipe(SanaPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}))

Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import SanaPipeline

from noisekit.core.families import adapter_for
from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitSanaPipeline(SavesAsStock, SanaPipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with SANA's own arguments passed through. The size defaults
        to the transformer's native one (SanaPipeline's own default is a fixed 1024 x 1024, and it takes no `None`)."""
        default_height, default_width = adapter_for(self).default_size()
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height or default_height,
                              width or default_width, **kwargs)
