"""The Qwen-Image family adapter (`QwenImagePipeline`): an MMDiT on 2x2-packed latents, a Qwen2.5-VL text encoder,
"true CFG" with a norm rescale, and a video-style VAE (`AutoencoderKLQwenImage`) with per-channel mean/std.

Canonical noise is `(C, h, w)` per seed (C = `in_channels // 4` = 16, h = H / 8). The transformer reads 2x2
patches packed into a sequence `(h/2 * w/2, 4C)`; `pack` is `QwenImagePipeline._pack_latents`, so
`pipe(latents=pack(noise))` starts from the same numbers. The stock pipeline's own draw with
`generator=torch.Generator().manual_seed(s)` is this seed's noise, packed, in float32: it draws `(1, 1, C, h, w)`
(a frame axis of one) with `randn_tensor` in the prompt embeddings' dtype, then packs; in bfloat16 the bits differ.

Guidance is the stock pipeline's true CFG: two transformer calls per step (cond, and uncond with its own
embeddings and mask), combined as `uncond + w (cond - uncond)` and rescaled per token to the norm of the
conditional prediction. `guidance_scale` here is the stock `true_cfg_scale`: the stock pipeline runs CFG only when
given a negative prompt; noisekit runs it whenever `guidance_scale > 1`, with Qwen-Image's documented empty
negative prompt " " when none is given. NFE: 2 per step under CFG, 1 without. The schedule is set as the stock
`__call__` sets it: `sigmas = linspace(1, 1/n, n)` and `mu` from the packed sequence length.
"""

import numpy as np
import torch

from .conditioning import Conditioning
from .flow_families import FlowAdapter, PackedLatents, _square

EMPTY_NEGATIVE_PROMPT = " "  # what Qwen-Image's examples pass to switch true CFG on


class QwenImageAdapter(PackedLatents, FlowAdapter):
    family = "qwen-image"
    text_encoder_names = ("text_encoder",)

    @classmethod
    def matches(cls, pipe):
        from diffusers import QwenImagePipeline

        return isinstance(pipe, QwenImagePipeline)

    def check(self):
        super().check()
        if self.denoiser.config.guidance_embeds:
            raise ValueError("guidance-distilled Qwen-Image transformers (`guidance_embeds=True`) are not supported: "
                             "diffusers' QwenImageTransformer2DModel cannot embed the guidance it is given.")

    # shapes -------------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self):
        return self.pipe.vae_scale_factor  # 2 ** len(temperal_downsample): the video VAE has no block_out_channels

    @property
    def latent_channels(self):
        return self.denoiser.config.in_channels // 4

    # sampling -----------------------------------------------------------------------------------------------
    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps

        image_seq_len = (shape[1] // 2) * (shape[2] // 2)
        self._latent_hw[image_seq_len] = (shape[1], shape[2])
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        mu = calculate_shift(image_seq_len, scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096),
                             scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        retrieve_timesteps(scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)

    def guide(self, uncond, cond, guidance_scale):
        """True CFG, then each token's prediction rescaled to the norm of the conditional one (as the stock loop)."""
        combined = uncond + guidance_scale * (cond - uncond)
        return combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))

    # conditioning and the denoiser --------------------------------------------------------------------------
    def encode(self, prompts, negative_prompt=None, with_uncond=True, height=None, width=None):
        """Each prompt encoded on its own (its mask all ones), then padded with zeros to one length; the mask
        says which tokens are real. The negative prompt is encoded once and shared by every prompt."""
        rows = [self.pipe.encode_prompt(p, device=self.device, num_images_per_prompt=1)[0] for p in prompts]
        if with_uncond:
            negative = negative_prompt if negative_prompt is not None else EMPTY_NEGATIVE_PROMPT
            rows += [self.pipe.encode_prompt(negative, device=self.device, num_images_per_prompt=1)[0]] * len(prompts)
        length = max(r.shape[1] for r in rows)
        embeds = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, length - r.shape[1])) for r in rows])
        masks = torch.stack([torch.arange(length, device=embeds.device) < r.shape[1] for r in rows]).long()
        count = len(prompts)
        if not with_uncond:
            return Conditioning(embeds, None, {"mask": masks})
        return Conditioning(embeds[:count], embeds[count:], {"mask": masks[:count]}, {"mask": masks[count:]})

    def _transformer(self, model_input, timestep, embeds, masks):
        # Trimmed to the longest real prompt of the batch, the mask dropped when all tokens are real: exactly the
        # embeddings and mask `encode_prompt` gives the stock call for the same prompts.
        length = int(masks.sum(dim=1).max())
        embeds, masks = embeds[:, :length], masks[:, :length]
        batch = model_input.shape[0]
        h, w = self._latent_hw.get(model_input.shape[1]) or _square(model_input.shape[1])
        timestep = timestep.expand(batch).to(model_input.dtype)
        return self.denoiser(hidden_states=model_input, timestep=timestep / 1000, guidance=None,
                             encoder_hidden_states_mask=None if masks.all() else masks,
                             encoder_hidden_states=embeds, img_shapes=[[(1, h // 2, w // 2)]] * batch,
                             return_dict=False)[0]

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        """Unguided: one call on the conditional rows. Guided: `model_input` is [x; x]; the uncond and cond halves
        are two calls (as the stock loop: the two prompts' lengths and masks differ), returned as [uncond; cond]."""
        if not guided:
            return self._transformer(model_input, timestep, conditioning.cond[prompt_index],
                                     conditioning.added_cond["mask"][prompt_index])
        if not conditioning.has_uncond:
            raise ValueError("this conditioning was encoded without the unconditional rows that CFG needs.")
        uncond_input, cond_input = model_input.chunk(2)
        uncond = self._transformer(uncond_input, timestep, conditioning.uncond[prompt_index],
                                   conditioning.added_uncond["mask"][prompt_index])
        cond = self._transformer(cond_input, timestep, conditioning.cond[prompt_index],
                                 conditioning.added_cond["mask"][prompt_index])
        return torch.cat([uncond, cond])

    def call_embeds(self, conditioning, prompt_index, count=1):
        """The stock call's embeddings and masks for one prompt (the stock pipeline repeats them for
        `num_images_per_prompt` itself, so `count` is not needed here)."""
        def trimmed(embeds, masks):
            length = int(masks[prompt_index].sum())
            return embeds[prompt_index : prompt_index + 1, :length], masks[prompt_index : prompt_index + 1, :length]

        embeds, mask = trimmed(conditioning.cond, conditioning.added_cond["mask"])
        out = {"prompt_embeds": embeds, "prompt_embeds_mask": mask}
        if conditioning.has_uncond:
            embeds, mask = trimmed(conditioning.uncond, conditioning.added_uncond["mask"])
            out.update(negative_prompt_embeds=embeds, negative_prompt_embeds_mask=mask)
        return out

    # images -------------------------------------------------------------------------------------------------
    def decode(self, latents, output_type="pil"):
        """Latents `(B, C, h, w)` (or packed) -> images, as the stock pipeline decodes: a frame axis of one,
        x / (1 / std) + mean per channel, the video VAE, its one frame."""
        if latents.ndim == 3:
            latents = self.unpack(latents)
        if output_type == "latent":
            return latents
        vae = self.pipe.vae
        latents = latents.to(vae.device, vae.dtype)[:, :, None]
        view = lambda values: torch.tensor(values).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device,  # noqa
                                                                                         latents.dtype)
        latents = latents / (1.0 / view(vae.config.latents_std)) + view(vae.config.latents_mean)
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0][:, :, 0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)
