"""Train the shapes judge (attribute classifier) -> `assets/shapes-judge`.

    python training/train_shapes_judge.py --vae runs/vae/vae --output_dir runs/judge

Half of each batch is the rendered scene, half its reconstruction through the shapes VAE, so the judge also reads
the softer images that the diffusion models decode. Resumes from `output_dir/checkpoints` on restart.
"""

import argparse
import os
import sys

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, batch_indices, publish, resume, save_checkpoint  # noqa: E402

from noisekit.shapes.dataset import heldout_captions, render_scenes  # noqa: E402
from noisekit.shapes.judge import INDEX, ShapesJudge, presence_index  # noqa: E402

IGNORE = -100


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="shapes VAE used to make the reconstructed half")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--data_seed", type=int, default=2)
    parser.add_argument("--num_scenes", type=int, default=20000)
    parser.add_argument("--max_train_steps", type=int, default=1500)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(input_args)


def targets(scenes):
    labels = {name: torch.full((len(scenes),), IGNORE) for name in ("color", "shape", "size", "position")}
    labels["background"] = torch.tensor([INDEX["background"].index(s.background) for s in scenes])
    labels["count"] = torch.tensor([len(s.objects) - 1 for s in scenes])
    labels["presence"] = torch.zeros(len(scenes), 32)
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            labels["presence"][row, presence_index(obj.color, obj.shape)] = 1.0
        if len(scene.objects) == 1:
            obj = scene.objects[0]
            for name in ("color", "shape", "size", "position"):
                labels[name][row] = INDEX[name].index(getattr(obj, name))
    return labels


@torch.no_grad()
def reconstruct(vae, pixels, batch_size=500):
    parts = [vae.decode(vae.encode(pixels[i : i + batch_size]).latent_dist.mode()).sample.clamp(-1, 1)
             for i in range(0, len(pixels), batch_size)]
    return torch.cat(parts)


def loss_fn(logits, labels):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits["presence"], labels["presence"])
    for name in ("background", "count", "color", "shape", "size", "position"):
        loss = loss + torch.nn.functional.cross_entropy(logits[name], labels[name], ignore_index=IGNORE)
    return loss


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    images, scenes = render_scenes(args.data_seed, args.num_scenes, exclude=heldout_captions())
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    reconstructed = reconstruct(AutoencoderKL.from_pretrained(args.vae).eval(), pixels)
    labels = targets(scenes)

    judge = ShapesJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / args.max_train_steps)
    judge, optimizer, schedule = accelerator.prepare(judge, optimizer, schedule)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    judge.train()
    while step < args.max_train_steps:
        index = batch_indices(args.data_seed, step, len(scenes), args.train_batch_size, accelerator)
        half = len(index) // 2
        x = torch.cat([pixels[index[:half]], reconstructed[index[half:]]])
        loss = loss_fn(judge(x.to(accelerator.device)), {k: v[index].to(accelerator.device) for k, v in labels.items()})
        accelerator.backward(loss)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        step += 1
        if step % 100 == 0:
            accelerator.print(f"step {step} loss {loss.item():.4f} {timer.seconds():.0f}s", flush=True)
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), "loss": loss.item()})

    if accelerator.is_main_process:
        judge = accelerator.unwrap_model(judge).eval()
        record = {"data_seed": args.data_seed, "num_scenes": args.num_scenes, "steps": step,
                  "train_seconds": round(timer.seconds(), 1), "vae": args.vae}
        publish(lambda tmp: judge.save_pretrained(tmp), os.path.join(args.output_dir, "judge"), record)


if __name__ == "__main__":
    main(parse_args())
