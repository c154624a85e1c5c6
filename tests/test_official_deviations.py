"""The official code's behaviours that noisekit does not reproduce by default, each behind a switch."""

import torch

from noisekit import noise_level_guidance, seed_noise
from noisekit.transforms.golden import golden_noise, prompt_embeddings
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_nlg_official_reinjects_one_vector_and_reads_the_t0_sigma(sd2_pipe):
    noise = seed_noise(sd2_pipe, [0])
    # no guidance step and no renormalisation: what is left is the injected noise
    options = dict(num_iterations=3, step_size=0.0, noise_variance=1e-2, renormalize=False, timestep=999)
    fresh = noise_level_guidance(sd2_pipe, "a red circle", noise, generator=generators([7]), **options).noise
    fixed = noise_level_guidance(sd2_pipe, "a red circle", noise, generator=generators([7]), official=True,
                                 **options).noise
    one = torch.randn((1, *noise.shape[1:]), generator=torch.Generator().manual_seed(7))
    # official: the same vector three times (in float16 between iterations); default: three fresh draws
    torch.testing.assert_close(fixed, noise + 3 * 0.1 * one, rtol=0, atol=5e-3)
    assert (fresh - (noise + 3 * 0.1 * one)).abs().max() > 0.05
    # the v -> eps scale: official reads alpha at t = 0 (about 1), the default at the evaluation timestep
    guided = dict(num_iterations=1, noise_variance=0.0, renormalize=False, clip=1e9, timestep=999)
    default = noise_level_guidance(sd2_pipe, "a red circle", noise, **guided).noise - noise
    official = noise_level_guidance(sd2_pipe, "a red circle", noise, official=True, **guided).noise - noise
    alphas = sd2_pipe.scheduler.alphas_cumprod
    ratio = float(official.norm() / default.norm())
    assert abs(ratio - float((alphas[0] / alphas[999]).sqrt())) / ratio < 0.01  # d = alpha (v_c - v_u)


def test_npnet_official_train_mode_is_random_and_eval_is_not(sd1_pipe):
    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=8, text_embed_dim=32, max_text_tokens=77,
                         swin_kwargs={**SMALL_SWIN, "drop_path_rate": 0.5}).eval()
    with torch.no_grad():
        net.alpha.fill_(1.0)
        net.beta.fill_(1.0)
    noise = seed_noise(sd1_pipe, [0])
    embeds = prompt_embeddings(sd1_pipe, ["a red circle"])
    with torch.no_grad():
        first, second = (golden_noise(net, noise, embeds, official_train_mode=True) for _ in range(2))
        assert (first - second).abs().max() > 1e-3 and not net.training  # random, and eval mode restored
        assert torch.equal(golden_noise(net, noise, embeds), golden_noise(net, noise, embeds))


def test_prompt_embeddings_default_size_on_sdxl(sdxl_pipe):
    embeds = prompt_embeddings(sdxl_pipe, ["a red circle", "a blue square"])
    assert embeds.shape[0] == 2 and embeds.shape[-1] == sum(
        e.config.hidden_size for e in (sdxl_pipe.text_encoder, sdxl_pipe.text_encoder_2))
