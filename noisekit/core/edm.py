"""EDM-preconditioned schedules (Karras et al. 2022; Playground v2.5 with `EDMDPMSolverMultistepScheduler` or
`EDMEulerScheduler`): x = x0 + sigma eps in VE units, the denoiser sees c_in(sigma) x at timestep
c_noise(sigma) = log(sigma) / 4, and x0 = c_skip(sigma) x + c_out(sigma) F with sigma_data. The schedulers carry
these as `precondition_inputs`, `precondition_noise` and `precondition_outputs`; everything here reads them from
the scheduler, so sigma_data and the prediction type are the model's own."""

import torch


def is_edm(scheduler):
    """A scheduler that preconditions the denoiser EDM's way (its schedule is in sigmas, not betas)."""
    return all(hasattr(scheduler, name) for name in ("precondition_inputs", "precondition_noise",
                                                     "precondition_outputs"))


def edm_x0(scheduler, model_output, model_input, step_index):
    """x0 `(B, C, h, w)` float32 from the output at loop index `step_index`, as the scheduler's `step` computes it.
    `model_input` is the preconditioned c_in x the denoiser saw; x = model_input / c_in is recovered in float64."""
    sigma = scheduler.sigmas[step_index].double().to(model_input.device)
    sample = model_input.double() * (sigma**2 + scheduler.config.sigma_data**2).sqrt()
    return scheduler.precondition_outputs(sample, model_output.double(), sigma).float()


def training_sigma(scheduler, timestep):
    """The sigma of training timestep `timestep` (T - 1 is sigma_max, 0 the smallest) on the scheduler's own
    training grid (a fresh copy: `pipe.scheduler` may hold a sampling schedule)."""
    fresh = type(scheduler).from_config(scheduler.config)
    grid = fresh.sigmas[: scheduler.config.num_train_timesteps]
    return float(grid[len(grid) - 1 - timestep])


def edm_epsilon(scheduler, model_output, sample, sigma):
    """eps = (x - x0) / sigma of VE sample `x` at `sigma` (float32)."""
    sigma = torch.tensor(sigma, dtype=torch.float64)
    x0 = scheduler.precondition_outputs(sample.double(), model_output.double(), sigma)
    return ((sample.double() - x0) / sigma).float()
