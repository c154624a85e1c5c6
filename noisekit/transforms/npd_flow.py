"""Re-denoise sampling on flow-matching models (SD3, FLUX.1-dev): NPNet's noise pairs without a DDIM schedule.

Rectified flow x_s = (1 - s) x0 + s eps, the transformer predicts v = eps - x0, and an Euler step from s to s'
is x_s' = x_s + (s' - s) v. With s0 = 1 > s1 the first two sigmas of the pipeline's own N-step schedule (shifted
as its `__call__` shifts them), re-denoise sampling (`noisekit.transforms.npd`) becomes

    v_l   = CFG_{omega_l}(v(x_T, s0))           omega_l = 5.5
    x_s1  = x_T + (s1 - s0) v_l                 the first Euler step
    v_w   = CFG_{omega_w}(v(x_s1, s0))          omega_w = 1.0, evaluated at s0 on x_s1 as the official code does
    x'_T  = x_s1 + (s0 - s1) v_w = x_T + (s0 - s1) (v_w - v_l)

the exact inverse of the Euler step (the "exact" inversion; the "official" indexing is an artefact of DDIM's
inverse scheduler and has no flow counterpart). On FLUX.1-dev, omega is the embedded guidance (one call, no CFG);
a model with no guidance at all (FLUX.1-schnell) has no guidance gap omega_l > omega_w, so it is refused.
"""

import copy

import torch

from ..core.families import adapter_for


def flow_guided_velocity(adapter, conditioning, latents, timestep, prompt_index, guidance_scale):
    """The velocity `(B, C, h, w)` float32 of canonical `latents` at `timestep`: CFG `uncond + w (cond - uncond)`
    for CFG models (the conditional half alone at w = 1), the embedded guidance w for guidance-distilled ones."""
    dtype = conditioning.cond.dtype
    guided = not adapter.guidance_embedded and guidance_scale != 1.0
    model_input = adapter.pack(torch.cat([latents] * 2) if guided else latents).to(adapter.device, dtype)
    output = adapter.denoise(model_input, timestep, conditioning, prompt_index, guided,
                             guidance_scale=guidance_scale)
    output = adapter.unpack(output).float()
    if not guided:
        return output
    uncond, cond = output.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def flow_first_sigmas(adapter, num_inference_steps, shape):
    """`(timestep t0, sigma s0, sigma s1)` of the pipeline's own schedule for latents of `shape` `(C, h, w)`."""
    if num_inference_steps < 2:
        raise ValueError(f"re-denoise sampling needs at least 2 inference steps, got {num_inference_steps}.")
    scheduler = copy.deepcopy(adapter.pipe.scheduler)
    adapter.set_timesteps(scheduler, num_inference_steps, adapter.device, shape)
    return scheduler.timesteps[0], float(scheduler.sigmas[0]), float(scheduler.sigmas[1])


@torch.no_grad()
def flow_re_denoise(pipe, conditioning, noise, prompt_index, num_inference_steps, denoise_guidance,
                    inversion_guidance, inversion):
    """Re-denoise sampling of canonical `noise` `(B, C, h, w)` on a flow pipeline (the module docstring).
    Returns `(target, x_s1, v_l, v_w, (t0, s1 * num_train_timesteps))` as float32 CPU tensors."""
    adapter = adapter_for(pipe)
    if inversion != "exact":
        raise ValueError(f"`inversion` must be 'exact' for {type(pipe).__name__}: the official indexing is DDIM's "
                         f"inverse-scheduler offset, which flow matching does not have; got {inversion!r}.")
    if not adapter.guidance_embedded and not adapter.guided(max(denoise_guidance, inversion_guidance)):
        raise ValueError(f"re-denoise sampling needs a guidance gap (omega_l > omega_w); {type(pipe).__name__} with "
                         "no guidance embedding and no CFG (FLUX.1-schnell) has none.")
    t0, s0, s1 = flow_first_sigmas(adapter, num_inference_steps, tuple(noise.shape[1:]))
    x_T = noise.to(adapter.device, torch.float32)
    index = prompt_index.to(adapter.device)
    v_l = flow_guided_velocity(adapter, conditioning, x_T, t0, index, denoise_guidance)
    x_s1 = x_T + (s1 - s0) * v_l
    v_w = flow_guided_velocity(adapter, conditioning, x_s1, t0, index, inversion_guidance)
    target = x_s1 + (s0 - s1) * v_w
    t1 = s1 * pipe.scheduler.config.num_train_timesteps
    cpu = lambda x: x.float().cpu()  # noqa: E731
    return cpu(target), cpu(x_s1), cpu(v_l), cpu(v_w), (float(t0), t1)
