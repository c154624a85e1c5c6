"""Every family's tiny random-weight pipeline, built offline, with the settings its stock call uses: what the
family tests and `benchmarks/conformance.py` run. SANA's tokenizer is Gemma's class over a small character
vocabulary and Qwen-Image's / FLUX.2's are byte-level BPEs (the real vocabularies cannot be built offline)."""

from . import tiny_flux_pipeline, tiny_lcm_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from .edm import tiny_edm_pipeline
from .pixart_sana import tiny_pixart_pipeline, tiny_sana_pipeline
from .qwen_flux2 import tiny_flux2_klein_pipeline, tiny_flux2_pipeline, tiny_qwen_image_pipeline

BUILDERS = {"flux_dev": lambda: tiny_flux_pipeline(guidance_embeds=True),
            "flux_schnell": lambda: tiny_flux_pipeline(guidance_embeds=False),
            "sd3": lambda: tiny_sd3_pipeline(with_t5=True), "sd3_no_t5": lambda: tiny_sd3_pipeline(with_t5=False),
            "lcm": tiny_lcm_pipeline,
            "pixart_sigma": tiny_pixart_pipeline, "pixart_alpha": lambda: tiny_pixart_pipeline(sigma=False),
            "sana": tiny_sana_pipeline,
            "qwen_image": tiny_qwen_image_pipeline, "flux2": tiny_flux2_pipeline,
            "flux2_klein": tiny_flux2_klein_pipeline, "sdxl_edm": tiny_edm_pipeline, "sdxl_edm_euler": lambda: tiny_edm_pipeline(euler=True)}
# family -> (guidance_scale, NFE per candidate per step, pixel size)
SETTINGS = {"flux_dev": (3.5, 1, 32), "flux_schnell": (0.0, 1, 32), "sd3": (4.0, 2, 32), "sd3_no_t5": (4.0, 2, 32),
            "lcm": (6.0, 1, 16), "pixart_sigma": (4.5, 2, 32), "pixart_alpha": (4.5, 2, 32), "sana": (4.5, 2, 32),
            "qwen_image": (4.0, 2, 32), "flux2": (4.0, 1, 32), "flux2_klein": (4.0, 2, 32),
            "sdxl_edm": (5.0, 2, 32), "sdxl_edm_euler": (5.0, 2, 32)}
# The UNet families the older tests cover on their own (tests/test_sampler.py); the conformance table adds them.
UNET_BUILDERS = {"sd": tiny_sd_pipeline, "sd_v": lambda: tiny_sd_pipeline(prediction_type="v_prediction"),
                 "sdxl": tiny_sdxl_pipeline}
UNET_SETTINGS = {"sd": (5.0, 2, 32), "sd_v": (5.0, 2, 32), "sdxl": (5.0, 2, 32)}
# Every family, for the matrices in benchmarks/.
ALL_BUILDERS = {**UNET_BUILDERS, **BUILDERS}
ALL_SETTINGS = {**UNET_SETTINGS, **SETTINGS}
# The stock call's own names for guidance where they differ: Qwen-Image's true CFG runs on `true_cfg_scale` and only
# with a negative prompt (noisekit's default one is " ").
STOCK_GUIDANCE = {"qwen_image": lambda scale: {"true_cfg_scale": scale, "negative_prompt": " "}}
