"""What differs between pipeline families: how prompts become conditioning and how latents become images.

`encode(pipe, prompts, ...)` returns a `Conditioning` with one row per distinct prompt; the sampler gathers
rows per candidate. SD 1.x/2.x (`StableDiffusionPipeline` and its relatives) need only text embeddings; SDXL
adds pooled text embeddings and size/crop time ids to the UNet call.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    """Per-prompt UNet conditioning: `cond`/`uncond` are `(P, L, D)`; `added_*` hold SDXL's extra inputs."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    added_cond: dict = field(default_factory=dict)
    added_uncond: dict = field(default_factory=dict)

    def unet_inputs(self, prompt_index, guided):
        """`(encoder_hidden_states, added_cond_kwargs)` for candidates with `prompt_index`, batched as diffusers
        batches them under CFG: all unconditional rows first, then all conditional rows."""
        hidden = self.cond[prompt_index]
        added = {k: v[prompt_index] for k, v in self.added_cond.items()}
        if guided:
            hidden = torch.cat([self.uncond[prompt_index], hidden])
            added = {k: torch.cat([self.added_uncond[k][prompt_index], v]) for k, v in added.items()}
        return hidden, (added or None)


def is_sdxl(pipe):
    return hasattr(pipe, "text_encoder_2") and hasattr(pipe, "_get_add_time_ids")


def check_supported(pipe):
    if not hasattr(pipe, "unet") or not hasattr(pipe, "encode_prompt"):
        raise ValueError(f"noisekit samples SD 1.x/2.x and SDXL pipelines (a UNet with `encode_prompt`); "
                         f"got {type(pipe).__name__}.")
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise ValueError("UNets with a guidance embedding (`time_cond_proj_dim`, LCM) are not supported yet.")


def encode(pipe, prompts, negative_prompt=None, guided=True, height=None, width=None):
    """Encode each distinct prompt on its own (so a prompt's embedding never depends on the others in a run)."""
    device = pipe._execution_device
    rows = [_encode_one(pipe, p, negative_prompt, guided, device, height, width) for p in prompts]
    stack = lambda parts: torch.cat(parts) if parts[0] is not None else None  # noqa: E731
    conditioning = Conditioning(stack([r.cond for r in rows]), stack([r.uncond for r in rows]))
    for key in rows[0].added_cond:
        conditioning.added_cond[key] = stack([r.added_cond[key] for r in rows])
        if guided:
            conditioning.added_uncond[key] = stack([r.added_uncond[key] for r in rows])
    return conditioning


def _encode_one(pipe, prompt, negative_prompt, guided, device, height, width):
    if not is_sdxl(pipe):
        cond, uncond = pipe.encode_prompt(prompt, device, 1, guided, negative_prompt)
        return Conditioning(cond, uncond)
    cond, uncond, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
        negative_prompt=negative_prompt)
    if pipe.text_encoder_2 is None:
        projection_dim = int(pooled.shape[-1])
    else:
        projection_dim = pipe.text_encoder_2.config.projection_dim
    # SDXL's defaults: original size = target size = the image size, no crop.
    time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=cond.dtype,
                                      text_encoder_projection_dim=projection_dim).to(device)
    return Conditioning(cond, uncond, {"text_embeds": pooled, "time_ids": time_ids},
                        {"text_embeds": negative_pooled, "time_ids": time_ids} if guided else {})


def decode(pipe, latents, output_type="pil"):
    """Latents -> images through the pipeline's VAE and image processor, as the stock pipelines decode them."""
    if output_type == "latent":
        return latents
    vae = pipe.vae
    needs_upcasting = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if needs_upcasting:
        vae.to(torch.float32)
    latents = latents.to(vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        view = lambda values: torch.tensor(values).view(1, -1, 1, 1).to(latents.device, latents.dtype)  # noqa: E731
        latents = latents * view(std) / vae.config.scaling_factor + view(mean)
    else:
        latents = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    if needs_upcasting:
        vae.to(torch.float16)
    do_denormalize = None
    if getattr(pipe, "safety_checker", None) is not None:
        # SD 1.x's checker blacks out flagged images; they are returned undenormalised, as the pipeline does.
        image, flagged = pipe.run_safety_checker(image, image.device, latents.dtype)
        do_denormalize = [not f for f in flagged]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)
