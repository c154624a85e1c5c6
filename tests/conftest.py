"""Shared fixtures: tiny real pipelines (built once per session), tiny CLIP models saved as folders, and helpers to swap
their schedulers."""

import json
import os

import open_clip
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from safetensors.torch import save_file

from noisekit.testing import tiny_sd_pipeline, tiny_sdxl_pipeline
from noisekit.tokenizer import clip_tokenizer

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SCHEDULERS = [DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
              DPMSolverMultistepScheduler, UniPCMultistepScheduler, PNDMScheduler, LMSDiscreteScheduler,
              HeunDiscreteScheduler]
STOCHASTIC = {DDPMScheduler, EulerAncestralDiscreteScheduler}


@pytest.fixture(scope="session")
def sd1_pipe():
    return tiny_sd_pipeline("epsilon")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, sd1_pipe):
    """The tiny SD 1.x pipeline saved as a folder, for `--model` (read only)."""
    folder = tmp_path_factory.mktemp("model")
    sd1_pipe.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    """A tiny untrained shapes judge saved as a folder (read only)."""
    from noisekit.shapes.judge import ShapesJudge

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("judge")
    ShapesJudge(width=8).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def sd2_pipe():
    return tiny_sd_pipeline("v_prediction")


@pytest.fixture(scope="session")
def sdxl_pipe():
    return tiny_sdxl_pipeline()


@pytest.fixture(scope="session", params=["sd1", "sd2", "sdxl"])
def any_pipe(request):
    return request.getfixturevalue(f"{request.param}_pipe")


def training_script(name):
    """`training/NAME.py` loaded as a module (the training scripts are no package); loading it also puts
    `training/` on the import path, as running it does."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "training", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def with_scheduler(pipe, scheduler_class, **overrides):
    """The same components with another scheduler (the fixture itself is left untouched)."""
    scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides)
    new = type(pipe).from_pipe(pipe, scheduler=scheduler)
    new.set_progress_bar_config(disable=True)
    return new


LIBRARY_CLIP = {  # a tiny open_clip model for the library's text features
    "model_cfg": {"embed_dim": 16, "quick_gelu": True,
                  "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def write_open_clip_dir(folder, config, weights=True, seed=0):
    """An open_clip `local-dir:` folder: `open_clip_config.json` (+ `open_clip_model.safetensors`)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump(config, f)
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False).eval()
    if weights:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(folder, "open_clip_model.safetensors"))
    return model


@pytest.fixture(scope="session")
def library_clip_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-clip"))
    write_open_clip_dir(folder, LIBRARY_CLIP)
    return folder


@pytest.fixture(scope="session")
def pickscore_dir(tmp_path_factory):
    """A tiny transformers CLIPModel with its CLIPProcessor, saved as PickScore's folder is laid out."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = str(tmp_path_factory.mktemp("pickscore"))
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder
