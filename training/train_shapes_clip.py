"""Train the shapes-world CLIP with open_clip's own model and contrastive loss -> `assets/shapes-clip`.

    python training/train_shapes_clip.py --vae runs/vae/vae --output_dir runs/clip

The result loads with stock open_clip: `open_clip.create_model_and_transforms("local-dir:assets/shapes-clip")`.
As for the judge, half of each batch is reconstructed through the shapes VAE. Resumes from
`output_dir/checkpoints` on restart.
"""

import argparse
import json
import os
import sys
import tempfile

import open_clip
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, batch_indices, publish, resume, save_checkpoint  # noqa: E402
from train_shapes_judge import reconstruct  # noqa: E402

from noisekit.shapes.dataset import heldout_captions, render_scenes  # noqa: E402

CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    },
    "preprocess_cfg": {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--data_seed", type=int, default=3)
    parser.add_argument("--num_scenes", type=int, default=20000)
    parser.add_argument("--max_train_steps", type=int, default=2000)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(input_args)


def write_config(folder):
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    config_dir = tempfile.mkdtemp(prefix="shapes-clip-config-")
    write_config(config_dir)
    model = open_clip.create_model(f"local-dir:{config_dir}", load_weights=False)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{config_dir}")

    images, scenes = render_scenes(args.data_seed, args.num_scenes, exclude=heldout_captions())
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # = Normalize(0.5, 0.5)
    reconstructed = reconstruct(AutoencoderKL.from_pretrained(args.vae).eval(), pixels)
    tokens = tokenizer([s.caption for s in scenes])

    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.1)
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / args.max_train_steps))
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    model.train()
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(scenes), args.train_batch_size, accelerator)
        half = len(index) // 2
        x = torch.cat([pixels[index[:half]], reconstructed[index[half:]]]).to(accelerator.device)
        image_features, text_features, logit_scale = model(x, tokens[index].to(accelerator.device))[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        accelerator.backward(loss)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        with torch.no_grad():  # CLIP clamps its learned temperature at 100
            accelerator.unwrap_model(model).logit_scale.clamp_(0, 4.6052)
        step += 1
        if step % 100 == 0:
            accelerator.print(f"step {step} loss {loss.item():.4f} {timer.seconds():.0f}s", flush=True)
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), "loss": loss.item()})

    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).eval()

        def write(folder):
            write_config(folder)
            state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
            save_file(state, os.path.join(folder, "open_clip_model.safetensors"))

        record = {"data_seed": args.data_seed, "num_scenes": args.num_scenes, "steps": step,
                  "train_seconds": round(timer.seconds(), 1), "vae": args.vae}
        publish(write, os.path.join(args.output_dir, "clip"), record)


if __name__ == "__main__":
    main(parse_args())
