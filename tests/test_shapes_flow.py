"""`shapes-flow`: the shapes world's MMDiT, saved as a stock `StableDiffusion3Pipeline` that links its shared parts."""

import os

import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file, save_file

from noisekit import sample, seed_noise
from noisekit.core.weights import store_float16
from noisekit.shapes.assets import asset_path, load_shapes_pipeline
from noisekit.shapes.flow import (ZERO_TOKENS, RepeatedTokenAttention, encode_captions, flow_pipeline,
                                  link_shared_weights, make_flow_transformer)
from noisekit.sources import load_pipeline

PROMPTS = ["a red circle in the top left", "", "a blue square above a green cross on a black background"]


@pytest.fixture(scope="module")
def flow_pipe():
    torch.manual_seed(0)
    transformer = make_flow_transformer()
    with torch.no_grad():  # weights away from their initialisation, which zeroes the output layer
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return flow_pipeline(transformer=transformer, source_pipeline=load_shapes_pipeline("shapes-t2i"))


def test_one_weighted_zero_token_equals_the_pipelines_256(flow_pipe):
    short, short_pooled = encode_captions(flow_pipe, PROMPTS)
    full, _, pooled, _ = flow_pipe.encode_prompt(prompt=PROMPTS, prompt_2=None, prompt_3=None,
                                                 do_classifier_free_guidance=False)
    assert full.shape[1] == short.shape[1] - 1 + ZERO_TOKENS and torch.equal(short_pooled, pooled)
    latents, t = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([950., 500., 40.])
    transformer = flow_pipe.transformer
    with torch.no_grad():
        reference = transformer(latents, full, pooled, t).sample
        processors = transformer.attn_processors
        transformer.set_attn_processor(RepeatedTokenAttention(ZERO_TOKENS))
        try:
            compact = transformer(latents, short, pooled, t).sample
        finally:
            transformer.set_attn_processor(processors)
    assert reference.abs().mean() > 0.1
    assert (compact - reference).abs().max() < 1e-5


def test_saved_folder_links_the_shared_weights_and_loads_with_the_stock_class(flow_pipe, tmp_path):
    folder = tmp_path / "shapes-flow"
    flow_pipe.save_pretrained(folder)
    store_float16(folder)
    link_shared_weights(folder, source=asset_path("shapes-t2i"))
    for link in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/text_model.safetensors",
                 "text_encoder_2/text_model.safetensors", "tokenizer/tokenizer.json"):
        assert os.path.islink(folder / link) and os.path.exists(folder / link), link
    stock = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    stock.set_progress_bar_config(disable=True)
    ours = load_pipeline(str(folder))  # noisekit passes the recorded-absent T5 itself
    assert type(ours) is StableDiffusion3Pipeline and ours.text_encoder_3 is None
    noise = seed_noise(ours, [3, 4])
    images = sample(ours, PROMPTS[:2], noise, num_inference_steps=3, guidance_scale=5.0, output_type="pt").images
    expected = stock(PROMPTS[:2], latents=noise.clone(), num_inference_steps=3, guidance_scale=5.0,
                     output_type="pt").images
    assert (images - expected).abs().max() <= 1e-4


def test_linking_refuses_a_source_with_other_weights(flow_pipe, tmp_path):
    folder = tmp_path / "flow"
    flow_pipe.save_pretrained(folder)
    vae_weights = str(folder / "vae" / "diffusion_pytorch_model.safetensors")
    state = load_file(vae_weights)
    name = sorted(state)[0]
    state[name] = state[name] + 1e-3  # a VAE fine-tuned since: linking would load other weights
    save_file(state, vae_weights)
    with pytest.raises(ValueError, match="does not hold the weights being saved"):
        link_shared_weights(folder, source=asset_path("shapes-t2i"))


def test_shipped_shapes_flow_loads_with_stock_diffusers_and_runs_by_name(tmp_path, capsys):
    import json

    from noisekit.cli import main

    folder = asset_path("shapes-flow")
    assert all(os.path.exists(os.path.join(root, name)) for root, _, files in os.walk(folder) for name in files)
    stock = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    assert stock.transformer.config.num_layers == 6 and stock.vae.config.shift_factor == 0.0
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--model", "shapes-flow", "--steps", "2", "--num_images", "2",
                 "--device", "cpu", "--output_dir", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"] == 2
