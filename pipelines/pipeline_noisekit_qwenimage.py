"""`NoisekitQwenImagePipeline`: Qwen-Image with a noise plan (NLG, seed search).

    pipe = NoisekitQwenImagePipeline.from_pipe(QwenImagePipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}), true_cfg_scale=4.0)

Seeds make canonical `(C, h, w)` noise, packed as QwenImagePipeline packs it. Also loadable as
`DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import QwenImagePipeline

from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitQwenImagePipeline(SavesAsStock, QwenImagePipeline):
    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, true_cfg_scale=4.0, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with Qwen-Image's own arguments passed through.
        `true_cfg_scale` is the CFG scale (noisekit's `guidance_scale`): true CFG runs whenever it is above 1, with
        `negative_prompt` or Qwen-Image's empty negative prompt " "."""
        if "guidance_scale" in kwargs:
            raise ValueError("Qwen-Image's CFG scale is `true_cfg_scale`; `guidance_scale` is for guidance-distilled "
                             "transformers, which noisekit does not serve.")

        def stock_call(guidance_scale, **rest):
            return super(NoisekitQwenImagePipeline, self).__call__(true_cfg_scale=guidance_scale, **rest)

        return call_with_plan(self, stock_call, prompt, seeds, noise_plan, height, width,
                              guidance_scale=true_cfg_scale, **kwargs)
