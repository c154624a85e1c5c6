"""Train the shapes world's rectified-flow model -> a `StableDiffusion3Pipeline` folder (`assets/shapes-flow`).

    python training/train_shapes_flow.py --source assets/shapes-t2i --output_dir runs/flow \
        --output_pipeline assets/shapes-flow --max_train_steps 4500
    accelerate launch training/train_shapes_flow.py ...   # several processes split each batch

An SD3-style MMDiT (`noisekit.shapes.flow`) learns the velocity `noise - x0` on `x_t = (1 - s) x0 + s noise`,
with `s` drawn logit-normally (SD3's choice). `shapes-t2i`'s VAE and CLIP text encoder are frozen and reused; the
captions are encoded once, as the stock pipeline encodes them. The exported weights are the EMA of the trained
ones, and the folder links the reused weight files. Resumes from `output_dir/checkpoints` on restart.
"""

import argparse
import os
import sys

import torch
from accelerate import Accelerator
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import JointAttnProcessor2_0
from diffusers.training_utils import EMAModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Timer, batch_indices, log_and_checkpoint, optimizer_step, publish, resume, shapes_latents)
from train_shapes_t2i import cosine_with_warmup  # noqa: E402

from noisekit.core.weights import store_float16  # noqa: E402
from noisekit.shapes.flow import (  # noqa: E402
    ZERO_TOKENS, RepeatedTokenAttention, encode_captions, flow_pipeline, link_shared_weights, make_flow_transformer)
from noisekit.shapes.models import MAX_TOKENS  # noqa: E402


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="the shapes-t2i folder whose VAE and text encoder to reuse")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_pipeline", help="where the pipeline folder goes (default: OUTPUT_DIR/pipeline)")
    parser.add_argument("--data_seed", type=int, default=1)
    parser.add_argument("--num_scenes", type=int, default=50000)
    parser.add_argument("--max_train_steps", type=int, default=4500)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=4e-4)
    parser.add_argument("--lr_warmup_steps", type=int, default=300)
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--checkpointing_steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation and diffusion noise")
    return parser.parse_args(input_args)


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    source = StableDiffusionPipeline.from_pretrained(args.source)
    transformer = make_flow_transformer()
    pipe = flow_pipeline(transformer=transformer, source_pipeline=source)
    latent_mean, latent_std, _, captions = shapes_latents(pipe.vae, pipe.tokenizer, args.data_seed, args.num_scenes,
                                                          MAX_TOKENS, with_captions=True)
    embeds, pooled = encode_captions(pipe, captions)

    transformer.set_attn_processor(RepeatedTokenAttention(ZERO_TOKENS))
    params = list(transformer.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, args.lr_warmup_steps, args.max_train_steps))
    ema = EMAModel(params, decay=args.ema_decay)
    transformer, optimizer, scheduler = accelerator.prepare(transformer, optimizer, scheduler)
    accelerator.register_for_checkpointing(ema)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    generator = torch.Generator().manual_seed(args.seed * 7919 + step)

    transformer.train()
    scale = pipe.vae.config.scaling_factor
    device = accelerator.device
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(captions), args.train_batch_size, accelerator)
        mean, std = latent_mean[index], latent_std[index]
        x0 = (mean + std * torch.randn(mean.shape, generator=generator)) * scale
        noise = torch.randn(x0.shape, generator=generator)
        sigma = torch.randn(len(index), generator=generator).sigmoid()  # logit-normal(0, 1)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        velocity = transformer(hidden_states=noisy.to(device), encoder_hidden_states=embeds[index].to(device),
                               pooled_projections=pooled[index].to(device), timestep=(sigma * 1000).to(device)).sample
        loss = torch.nn.functional.mse_loss(velocity.float(), (noise - x0).to(device))
        optimizer_step(accelerator, loss, params, optimizer, lr_scheduler=scheduler, ema=ema)
        step += 1
        log_and_checkpoint(accelerator, args, step, loss, timer)

    if accelerator.is_main_process:
        transformer = accelerator.unwrap_model(transformer)
        ema.copy_to(transformer.parameters())
        transformer.set_attn_processor(JointAttnProcessor2_0())
        pipe.transformer = transformer.eval()
        destination = args.output_pipeline or os.path.join(args.output_dir, "pipeline")

        def write(folder):
            pipe.save_pretrained(folder)
            store_float16(folder)
            link_shared_weights(folder, source=args.source)

        record = {"data_seed": args.data_seed, "num_scenes": args.num_scenes, "steps": step,
                  "train_seconds": round(timer.seconds(), 1), "source": args.source}
        publish(write, destination, record)


if __name__ == "__main__":
    main(parse_args())
