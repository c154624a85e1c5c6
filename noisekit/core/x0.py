"""x0 (Tweedie) estimates from a denoiser's output: VP parametrisations (UNets) and flow matching."""



def predict_x0(scheduler, model_output, model_input, step_index, timestep):
    """Tweedie estimate of x0 from the model output at `step_index`, in the VP parametrisation of the model input.

    alpha_bar comes from the scheduler's sigma at this step when it has sigmas (Euler, Heun, LMS, DPM-Solver,
    UniPC; alpha_bar = 1 / (1 + sigma^2)), otherwise from `alphas_cumprod[t]` (DDIM, DDPM, PNDM).
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > step_index:
        alpha_bar = 1.0 / (1.0 + sigmas[step_index].double() ** 2)
    else:
        alpha_bar = scheduler.alphas_cumprod[int(timestep)].double()
    alpha, sigma = alpha_bar.sqrt().float().to(model_input.device), (1 - alpha_bar).sqrt().float().to(model_input.device)
    x_t, output = model_input.float(), model_output.float()
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction_type == "v_prediction":
        return alpha * x_t - sigma * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"x0 previews support prediction types epsilon, v_prediction and sample, got {prediction_type!r}.")


def flow_x0(velocity, x_t, sigma):
    """Rectified flow: x_t = (1 - sigma) x0 + sigma eps and v = eps - x0, so x0 = x_t - sigma v (float32)."""
    return x_t.float() - float(sigma) * velocity.float()


def without_learned_variance(denoiser, output):
    """A DiT's prediction without the learned-variance half of its output channels, dropped exactly where the stock
    PixArt and SANA pipelines drop it (`out_channels // 2 == in_channels`)."""
    config = denoiser.config
    if config.out_channels // 2 == config.in_channels:
        return output.chunk(2, dim=1)[0]
    return output
