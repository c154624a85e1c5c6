"""Fine-tune an epsilon-prediction SD model into v-prediction on a zero-terminal-SNR schedule (Lin et al. 2023).

    python training/finetune_vpred_ztsnr.py --pretrained_model_name_or_path assets/shapes-t2i-eps \\
        --dataset shapes --output_dir runs/t2i-ztsnr --max_train_steps 2500
    python training/finetune_vpred_ztsnr.py --pretrained_model_name_or_path PATH --train_data_dir DIR ...
    accelerate launch training/finetune_vpred_ztsnr.py ...

The recipe of the paper: the schedule rescaled by Algorithm 1 (`rescale_betas_zero_snr=True`), v targets from
`get_velocity` (at t = T, v = -x0, which is well defined), timesteps drawn uniformly including T - 1, the text
encoder frozen, EMA of the UNet. Loss weights never divide by the SNR (it is 0 at t = T): plain v-MSE by default,
or min-SNR-gamma in its v form, min(SNR, gamma) / (SNR + 1), with `--snr_gamma`. The saved scheduler config says
`v_prediction`, `rescale_betas_zero_snr` and `trailing` spacing, so diffusers and noisekit sample it correctly.

`--train_data_dir` is a folder of images with a `metadata.jsonl` of `{"file_name": ..., "text": ...}` lines;
`--dataset shapes` renders the shapes world. Resumes from `output_dir/checkpoints` on restart.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Timer, batch_indices, log_and_checkpoint, optimizer_step, publish, resume, shapes_latents)

from noisekit.core.weights import store_float16  # noqa: E402


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_model_name_or_path", required=True, help="an epsilon SD pipeline folder or id")
    parser.add_argument("--output_dir", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["shapes"], help="render the shapes world")
    source.add_argument("--train_data_dir", help="images + metadata.jsonl ({file_name, text} per line)")
    parser.add_argument("--resolution", type=int, default=None, help="training size; the model's default if unset")
    parser.add_argument("--data_seed", type=int, default=4)
    parser.add_argument("--num_scenes", type=int, default=50000, help="shapes scenes to render")
    parser.add_argument("--max_train_steps", type=int, default=2500)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--snr_gamma", type=float, default=None, help="min-SNR-gamma in its v form; off by default")
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--caption_dropout", type=float, default=0.1)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(input_args)


class FolderLatents:
    """Images of a folder encoded on the fly (real data is too large to encode up front)."""

    def __init__(self, folder, pipe, resolution, caption_dropout, seed):
        with open(os.path.join(folder, "metadata.jsonl")) as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        if not self.records:
            raise ValueError(f"{folder}/metadata.jsonl lists no images.")
        self.folder, self.pipe, self.resolution = folder, pipe, resolution
        drop = torch.rand(len(self.records), generator=torch.Generator().manual_seed(seed)) < caption_dropout
        self.captions = ["" if d else r["text"] for r, d in zip(self.records, drop.tolist())]

    def __len__(self):
        return len(self.records)

    def batch(self, index, generator):
        pixels = []
        for i in index.tolist():
            image = Image.open(os.path.join(self.folder, self.records[i]["file_name"])).convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((self.resolution,) * 2, Image.BICUBIC)
            pixels.append(torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1)
        with torch.no_grad():
            dist = self.pipe.vae.encode(torch.stack(pixels).to(self.pipe.vae.device)).latent_dist
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device)
        tokens = self.pipe.tokenizer([self.captions[i] for i in index.tolist()], padding="max_length",
                                     max_length=self.pipe.tokenizer.model_max_length, truncation=True,
                                     return_tensors="pt").input_ids
        return latents, tokens


class ShapesLatents:
    def __init__(self, pipe, args):
        self.mean, self.std, self.tokens = shapes_latents(pipe.vae, pipe.tokenizer, args.data_seed, args.num_scenes,
                                                          pipe.tokenizer.model_max_length, args.caption_dropout)

    def __len__(self):
        return len(self.tokens)

    def batch(self, index, generator):
        mean, std = self.mean[index], self.std[index]
        return mean + std * torch.randn(mean.shape, generator=generator), self.tokens[index]


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    pipe = StableDiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, safety_checker=None)
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"{args.pretrained_model_name_or_path} already predicts "
                         f"{pipe.scheduler.config.prediction_type!r}; this script converts epsilon models.")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config, rescale_betas_zero_snr=True,
                                                prediction_type="v_prediction")
    resolution = args.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    data = ShapesLatents(pipe, args) if args.dataset == "shapes" else \
        FolderLatents(args.train_data_dir, pipe, resolution, args.caption_dropout, args.data_seed)

    unet, text_encoder = pipe.unet, pipe.text_encoder.eval().requires_grad_(False)
    ema = EMAModel(unet.parameters(), decay=args.ema_decay)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=1e-2)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    accelerator.register_for_checkpointing(ema)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    generator = torch.Generator().manual_seed(args.seed * 7919 + step)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    scale = pipe.vae.config.scaling_factor

    unet.train()
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(data), args.train_batch_size, accelerator)
        latents, tokens = data.batch(index, generator)
        latents = latents.cpu() * scale
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        target = noise_scheduler.get_velocity(latents, noise, t)
        with torch.no_grad():
            hidden = text_encoder(tokens.to(accelerator.device))[0]
        prediction = unet(noisy.to(accelerator.device), t.to(accelerator.device), hidden).sample.float()
        per_sample = (prediction - target.to(prediction.device)).pow(2).mean(dim=(1, 2, 3))
        if args.snr_gamma is not None:
            snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
            per_sample = per_sample * (snr.clamp(max=args.snr_gamma) / (snr + 1)).to(per_sample.device)
        loss = per_sample.mean()
        optimizer_step(accelerator, loss, list(unet.parameters()), optimizer, ema=ema)
        step += 1
        log_and_checkpoint(accelerator, args, step, loss, timer)

    if accelerator.is_main_process:
        unet = accelerator.unwrap_model(unet)
        ema.copy_to(unet.parameters())
        pipe.unet = unet.eval()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, rescale_betas_zero_snr=True,
                                                   prediction_type="v_prediction", timestep_spacing="trailing")

        def write(folder):
            pipe.save_pretrained(folder)
            store_float16(folder)

        record = {"base": args.pretrained_model_name_or_path, "data": args.dataset or args.train_data_dir,
                  "data_seed": args.data_seed, "steps": step, "train_seconds": round(timer.seconds(), 1),
                  "snr_gamma": args.snr_gamma, "recommended_guidance_rescale": 0.7}
        publish(write, os.path.join(args.output_dir, "pipeline"), record)


if __name__ == "__main__":
    main(parse_args())
