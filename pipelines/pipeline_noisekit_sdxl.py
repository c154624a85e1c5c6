"""`NoisekitStableDiffusionXLPipeline`: SDXL with a noise plan (library -> golden noise -> NLG).

    pipe = NoisekitStableDiffusionXLPipeline.from_pipe(StableDiffusionXLPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(npnet=True))   # the pipeline's NPNet

Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

from noisekit import NoisePromptNet
from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitStableDiffusionXLPipeline(SavesAsStock, StableDiffusionXLPipeline):
    _optional_components = StableDiffusionXLPipeline._optional_components + ["npnet"]

    # Type hints as the parent's: `from_pipe` only carries over components whose class matches them.
    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection,
                 tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer, unet: UNet2DConditionModel,
                 scheduler: KarrasDiffusionSchedulers, image_encoder: CLIPVisionModelWithProjection = None,
                 feature_extractor: CLIPImageProcessor = None, force_zeros_for_empty_prompt: bool = True,
                 add_watermarker: bool | None = None, npnet: NoisePromptNet = None):
        super().__init__(vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler, image_encoder,
                         feature_extractor, force_zeros_for_empty_prompt, add_watermarker)
        self.register_modules(npnet=npnet)

    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """As `NoisekitStableDiffusionPipeline.__call__`, with SDXL's own arguments passed through."""
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
