"""`NoisekitStableDiffusionPipeline`: SD 1.x/2.x with a noise plan (library -> golden noise -> NLG).

    pipe = NoisekitStableDiffusionPipeline.from_pipe(StableDiffusionPipeline.from_pretrained(...))
    out = pipe("a red circle", seeds=range(4), noise_plan=NoisePlan(nlg={}))
    out.images, out.recipes, out.nfe

Also loadable as `DiffusionPipeline.from_pretrained(model, custom_pipeline="<path to this file>")`.
"""

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from noisekit import NoisePromptNet
from noisekit.pipeline_call import SavesAsStock, call_with_plan


class NoisekitStableDiffusionPipeline(SavesAsStock, StableDiffusionPipeline):
    _optional_components = StableDiffusionPipeline._optional_components + ["npnet"]

    # Type hints as the parent's: `from_pipe` only carries over components whose class matches them.
    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler: KarrasDiffusionSchedulers,
                 safety_checker: StableDiffusionSafetyChecker = None, feature_extractor: CLIPImageProcessor = None,
                 image_encoder: CLIPVisionModelWithProjection = None, requires_safety_checker: bool = False,
                 npnet: NoisePromptNet = None):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder, requires_safety_checker)
        self.register_modules(npnet=npnet)

    @torch.no_grad()
    def __call__(self, prompt, seeds=None, noise_plan=None, height=None, width=None, **kwargs):
        """The stock call's arguments (`num_inference_steps`, `guidance_scale`, `guidance_rescale`,
        `negative_prompt`, `output_type`, ...) plus `seeds` (one image per seed and prompt; default `[0]`) and
        `noise_plan` (a `noisekit.plan.NoisePlan`). Returns a `NoisekitPipelineOutput`."""
        return call_with_plan(self, super().__call__, prompt, seeds, noise_plan, height, width, **kwargs)
