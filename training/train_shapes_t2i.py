"""Train the shapes-world text-to-image model -> a `StableDiffusionPipeline` folder (`assets/shapes-t2i-eps`).

    python training/train_shapes_t2i.py --vae runs/vae/vae --output_dir runs/t2i-eps --max_train_steps 6000
    accelerate launch training/train_shapes_t2i.py ...   # several processes split each batch

The UNet and a small CLIP text encoder train jointly on SD 1.x's schedule (epsilon prediction, `scaled_linear`
betas, non-zero terminal SNR). Latents are encoded once (posterior mean and std) and sampled every step. The
exported weights are the EMA of the trained ones. Resumes from `output_dir/checkpoints` on restart.
"""

import argparse
import math
import os
import sys

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Timer, batch_indices, log_and_checkpoint, optimizer_step, publish, resume, shapes_latents)

from noisekit.shapes.models import MAX_TOKENS, make_text_encoder, make_unet  # noqa: E402
from noisekit.tokenizer import clip_tokenizer  # noqa: E402
from noisekit.core.weights import store_float16  # noqa: E402

# SD 1.x's training schedule.
SD1_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="folder of the trained shapes VAE")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--data_seed", type=int, default=1)
    parser.add_argument("--num_scenes", type=int, default=50000)
    parser.add_argument("--max_train_steps", type=int, default=6000)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--lr_warmup_steps", type=int, default=200)
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation and diffusion noise")
    return parser.parse_args(input_args)


def cosine_with_warmup(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    tokenizer = clip_tokenizer(MAX_TOKENS)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    latent_mean, latent_std, token_ids = shapes_latents(vae, tokenizer, args.data_seed, args.num_scenes, MAX_TOKENS)

    noise_scheduler = DDPMScheduler(**SD1_SCHEDULE, prediction_type="epsilon")
    unet, text_encoder = make_unet(), make_text_encoder()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, args.lr_warmup_steps, args.max_train_steps))
    ema = EMAModel(params, decay=args.ema_decay)
    unet, text_encoder, optimizer, scheduler = accelerator.prepare(unet, text_encoder, optimizer, scheduler)
    accelerator.register_for_checkpointing(ema)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    generator = torch.Generator().manual_seed(args.seed * 7919 + step)

    unet.train()
    text_encoder.train()
    scale = vae.config.scaling_factor
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(token_ids), args.train_batch_size, accelerator)
        mean, std = latent_mean[index], latent_std[index]
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        hidden = text_encoder(token_ids[index].to(accelerator.device))[0]
        prediction = unet(noisy.to(accelerator.device), t.to(accelerator.device), hidden).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.to(prediction.device))
        optimizer_step(accelerator, loss, params, optimizer, lr_scheduler=scheduler, ema=ema)
        step += 1
        log_and_checkpoint(accelerator, args, step, loss, timer)

    if accelerator.is_main_process:
        unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
        ema.copy_to(list(unet.parameters()) + list(text_encoder.parameters()))
        sampling_scheduler = DDIMScheduler(**SD1_SCHEDULE, prediction_type="epsilon", clip_sample=False,
                                           set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                       unet=unet.eval(), scheduler=sampling_scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

        def write(folder):
            pipe.save_pretrained(folder)
            store_float16(folder)

        record = {"data_seed": args.data_seed, "num_scenes": args.num_scenes, "steps": step,
                  "train_seconds": round(timer.seconds(), 1), "vae": args.vae}
        publish(write, os.path.join(args.output_dir, "pipeline"), record)


if __name__ == "__main__":
    main(parse_args())
