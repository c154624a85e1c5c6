"""Train the shapes-world VAE (downsampling factor 4, 4 latent channels) -> `assets/shapes-t2i*/vae`.

    python training/train_shapes_vae.py --output_dir runs/vae --max_train_steps 1250
    accelerate launch training/train_shapes_vae.py ...   # several processes split each batch

Loss: L1 on pixels, weighted x5 where the pixel differs from the scene's background (the objects are a small
part of the image and carry every attribute), plus a tiny KL. Resumes from `output_dir/checkpoints` on restart.
"""

import argparse
import os
import sys

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, batch_indices, publish, resume, save_checkpoint  # noqa: E402

from noisekit.shapes.dataset import heldout_captions, render_scenes  # noqa: E402
from noisekit.shapes.scenes import BACKGROUNDS  # noqa: E402


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="checkpoints and the trained `vae/` go here")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--num_scenes", type=int, default=20000)
    parser.add_argument("--max_train_steps", type=int, default=1250)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--foreground_weight", type=float, default=5.0)
    parser.add_argument("--kl_weight", type=float, default=1e-6)
    parser.add_argument("--checkpointing_steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation")
    return parser.parse_args(input_args)


def make_vae():
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
        mid_block_add_attention=False,
        norm_num_groups=8,
    )


def foreground_mask(images, scenes):
    """1 where a pixel differs from its scene's background colour by more than 8 levels in some channel."""
    backgrounds = np.array([BACKGROUNDS[s.background] for s in scenes], dtype=np.int16)[:, None, None, :]
    return (np.abs(images.astype(np.int16) - backgrounds).max(axis=-1) > 8).astype(np.float32)


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    images, scenes = render_scenes(args.data_seed, args.num_scenes, exclude=heldout_captions())
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    weights = 1.0 + (args.foreground_weight - 1.0) * torch.from_numpy(foreground_mask(images, scenes))[:, None]

    vae = make_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.learning_rate)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])

    vae.train()
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(pixels), args.train_batch_size, accelerator)
        x = pixels[index].to(accelerator.device)
        posterior = accelerator.unwrap_model(vae).encode(x).latent_dist
        reconstruction = accelerator.unwrap_model(vae).decode(posterior.sample()).sample
        l1 = (weights[index].to(x.device) * (reconstruction - x).abs()).mean()
        loss = l1 + args.kl_weight * posterior.kl().mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 50 == 0:
            accelerator.print(f"step {step} l1 {l1.item():.4f} {timer.seconds():.0f}s", flush=True)
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), "l1": l1.item()})

    if accelerator.is_main_process:
        vae = accelerator.unwrap_model(vae).eval()
        # The latent scaling factor makes the diffusion model see unit-variance latents, as SD's 0.18215 does.
        with torch.no_grad():
            latents = vae.encode(pixels[:512]).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
        record = {"data_seed": args.data_seed, "num_scenes": args.num_scenes, "steps": step,
                  "train_seconds": round(timer.seconds(), 1), "scaling_factor": vae.config.scaling_factor}
        publish(lambda tmp: vae.save_pretrained(tmp), os.path.join(args.output_dir, "vae"), record)


if __name__ == "__main__":
    main(parse_args())
