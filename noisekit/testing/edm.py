"""A tiny Playground-v2.5-shaped pipeline: the tiny SDXL UNet and text encoders under an EDM scheduler
(sigma_data 0.5, Karras sigmas from 0.002 to 80, as Playground v2.5 ships it) and a VAE with per-channel latent
statistics (Playground's `latents_mean` / `latents_std`, scaling factor 0.5)."""

from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from . import tiny_sdxl_pipeline

# Playground v2.5's scheduler config (`scheduler/scheduler_config.json`).
PLAYGROUND_SCHEDULE = dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_schedule="karras",
                           num_train_timesteps=1000, prediction_type="epsilon", rho=7.0, final_sigmas_type="zero")
PLAYGROUND_LATENTS = dict(latents_mean=[-1.6574, 1.886, -1.383, 2.5155], latents_std=[8.4927, 5.9022, 6.5498, 5.2299],
                          scaling_factor=0.5)


def tiny_edm_pipeline(*, euler=False, seed=0):
    """`EDMDPMSolverMultistepScheduler` (2nd-order DPM-Solver++, Playground's) or, with `euler`, `EDMEulerScheduler`."""
    if euler:
        scheduler = EDMEulerScheduler(**PLAYGROUND_SCHEDULE)
    else:
        scheduler = EDMDPMSolverMultistepScheduler(**PLAYGROUND_SCHEDULE, solver_order=2,
                                                   algorithm_type="dpmsolver++", solver_type="midpoint")
    base = tiny_sdxl_pipeline(seed=seed)
    base.vae.register_to_config(**PLAYGROUND_LATENTS)
    pipe = type(base)(**{**base.components, "scheduler": scheduler}, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe
