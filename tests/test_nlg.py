import pytest
import torch
from conftest import with_scheduler
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from noisekit import NoiseRecipe, apply_nlg, noise_level_guidance, seed_noise, zero_snr
from noisekit.transforms.nlg import evaluation_timestep
from noisekit.core.recipe import seed_recipes

PROMPT = "a large red circle on a black background"


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("pipe_name", ["sd1_pipe", "sd2_pipe"])
def test_update_rule_step_by_step(request, pipe_name):
    pipe = request.getfixturevalue(pipe_name)
    noise = seed_noise(pipe, [0, 1])
    out = noise_level_guidance(pipe, PROMPT, noise, num_iterations=2, clip=0.05, generator=gens([7, 8]))
    # The same two iterations by hand, with the paper's rule.
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True)
    hidden = torch.cat([uncond.expand(2, -1, -1), cond.expand(2, -1, -1)])
    alpha_bar = pipe.scheduler.alphas_cumprod[999].double()
    alpha, sigma = float(alpha_bar.sqrt()), float((1 - alpha_bar).sqrt())
    n, generators = noise.clone(), gens([7, 8])
    for _ in range(2):
        x = torch.cat([n, n])
        with torch.no_grad():
            output = pipe.unet(x, torch.tensor(999), encoder_hidden_states=hidden).sample
        eps = output if pipe.scheduler.config.prediction_type == "epsilon" else alpha * output + sigma * x
        d = eps[2:] - eps[:2]
        for row in range(2):
            norm = d[row].norm()
            step = d[row] * min(1.0, 0.05 / norm.item())
            xi = torch.randn((1, 4, 8, 8), generator=generators[row])[0]
            n[row] = n[row] - step + 1e-3**0.5 * xi
            n[row] = n[row] * (256**0.5) / n[row].norm()
    assert torch.allclose(out.noise, n, atol=1e-5)
    assert out.nfe == 2 * 2 * 2 and out.timestep == 999
    assert [it["clipped"] for it in out.diagnostics] == [[v > 0.05 for v in it["norm_d"]] for it in out.diagnostics]


def test_input_is_never_modified_and_generators_reproduce(sd1_pipe):
    noise = seed_noise(sd1_pipe, [0, 1])
    before = noise.clone()
    first = noise_level_guidance(sd1_pipe, PROMPT, noise, num_iterations=3, generator=gens([1, 2])).noise
    again = noise_level_guidance(sd1_pipe, PROMPT, noise, num_iterations=3, generator=gens([1, 2])).noise
    other = noise_level_guidance(sd1_pipe, PROMPT, noise, num_iterations=3, generator=gens([3, 4])).noise
    assert torch.equal(noise, before) and torch.equal(first, again) and not torch.equal(first, other)
    split = noise_level_guidance(sd1_pipe, PROMPT, noise, num_iterations=3, generator=gens([1, 2]), micro_batch_size=1)
    assert torch.allclose(split.noise, first, atol=1e-5)
    assert torch.allclose(first.flatten(1).norm(dim=1), torch.full((2,), 16.0))  # sqrt(D) = sqrt(256)


def test_zero_terminal_snr_moves_the_evaluation_point(sd2_pipe):
    pipe = zero_snr(with_scheduler(sd2_pipe, DDIMScheduler))
    assert evaluation_timestep(pipe.scheduler) == 880  # SNR closest to SD's terminal 0.004682
    assert evaluation_timestep(sd2_pipe.scheduler) == 999
    noise = seed_noise(pipe, [0])
    at_T = noise_level_guidance(pipe, PROMPT, noise, num_iterations=1, timestep=999, noise_variance=0)
    assert at_T.diagnostics[0]["norm_d"][0] == 0.0  # eps(x_T) = x_T for every prompt: nothing to follow
    auto = noise_level_guidance(pipe, PROMPT, noise, num_iterations=1, noise_variance=0)
    assert auto.timestep == 880 and auto.diagnostics[0]["norm_d"][0] > 0
    euler = zero_snr(with_scheduler(sd2_pipe, EulerDiscreteScheduler))  # clamped alpha_bar_T = 2**-24
    assert evaluation_timestep(euler.scheduler) == 880


def test_relative_clip_scales_with_the_latent_size(sd1_pipe):
    noise = seed_noise(sd1_pipe, [0])
    out = noise_level_guidance(sd1_pipe, PROMPT, noise, num_iterations=1, relative_clip=1e-4, noise_variance=0)
    assert out.diagnostics[0]["clipped"] == [out.diagnostics[0]["norm_d"][0] > 1e-4 * 16]


def test_sdxl_and_negative_prompts(sdxl_pipe):
    noise = seed_noise(sdxl_pipe, [0, 1])
    plain = noise_level_guidance(sdxl_pipe, PROMPT, noise, num_iterations=2, generator=gens([0, 1]))
    negative = noise_level_guidance(sdxl_pipe, PROMPT, noise, num_iterations=2, generator=gens([0, 1]),
                                    negative_prompt="a blue square")
    assert plain.nfe == 8 and not torch.equal(plain.noise, negative.noise)


def test_recipe_replays_nlg_bit_for_bit(sd1_pipe, sd2_pipe):
    noise = seed_noise(sd1_pipe, [4, 5])
    out, recipes = apply_nlg(sd1_pipe, PROMPT, noise, seed_recipes([4, 5], noise.shape[1:], noise), num_iterations=3)
    recipe = NoiseRecipe.from_json(recipes[1].to_json())
    assert recipe.transforms[0]["name"] == "nlg" and recipe.transforms[0]["weights_hash"]
    assert torch.equal(recipe.replay(pipe=sd1_pipe), out.noise[1:2])
    with pytest.raises(ValueError, match="is not the one the recipe used"):
        recipe.replay(pipe=sd2_pipe)
    with pytest.raises(ValueError, match="needs the pipeline"):
        recipe.replay()


def test_bad_arguments(sd1_pipe):
    noise = seed_noise(sd1_pipe, [0, 1])
    with pytest.raises(ValueError, match="one CPU generator per noise row"):
        noise_level_guidance(sd1_pipe, PROMPT, noise)
    with pytest.raises(ValueError, match="`timestep` must be 'auto' or an integer"):
        noise_level_guidance(sd1_pipe, PROMPT, noise, timestep=1000, noise_variance=0)
    with pytest.raises(ValueError, match="unknown NLG parameters"):
        apply_nlg(sd1_pipe, PROMPT, noise, seed_recipes([0, 1], noise.shape[1:]), iterations=3)
