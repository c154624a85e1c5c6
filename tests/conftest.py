"""Shared fixtures: tiny real pipelines (built once per session) and helpers to swap their schedulers."""

import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from noisekit.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SCHEDULERS = [DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
              DPMSolverMultistepScheduler, UniPCMultistepScheduler, PNDMScheduler, LMSDiscreteScheduler,
              HeunDiscreteScheduler]
STOCHASTIC = {DDPMScheduler, EulerAncestralDiscreteScheduler}


@pytest.fixture(scope="session")
def sd1_pipe():
    return tiny_sd_pipeline("epsilon")


@pytest.fixture(scope="session")
def sd2_pipe():
    return tiny_sd_pipeline("v_prediction")


@pytest.fixture(scope="session")
def sdxl_pipe():
    return tiny_sdxl_pipeline()


@pytest.fixture(scope="session", params=["sd1", "sd2", "sdxl"])
def any_pipe(request):
    return request.getfixturevalue(f"{request.param}_pipe")


def with_scheduler(pipe, scheduler_class, **overrides):
    """The same components with another scheduler (the fixture itself is left untouched)."""
    scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides)
    new = type(pipe).from_pipe(pipe, scheduler=scheduler)
    new.set_progress_bar_config(disable=True)
    return new
