"""Train the shapes judge's latent twin (`noisekit.rewards.latent_twin`) -> `assets/shapes-judge-latent`.

    python training/train_latent_twin.py --model shapes-t2i --output_dir runs/twin \
        --output_folder assets/shapes-judge-latent
    accelerate launch training/train_latent_twin.py ...   # several processes split each batch

Two datasets are made once and stored in `output_dir` (resuming reads them back):

- `scenes.safetensors`: `--num_scenes` rendered scenes (held-out captions excluded), their VAE latents (posterior
  mean times the scaling factor, as x0 previews are) and the judge's features and head logits of the image;
- `trajectories.safetensors`: `--num_prompts` training captions x `--num_seeds` seeds sampled by `--model`, the x0
  latent of every step and the final latent, with the judge's features and logits of the *final* decoded image.

Each batch is half scenes (sigma = 0, the image's own targets) and half trajectory rows at a random step (that
step's x0 latent and sigma, the final image's targets: TTSnap's self-distillation). The loss is `twin_loss`:
features MSE plus the heads' KL divergence. Validation: per-prompt Kendall tau with the final judge reward, per
step, on `--num_validation_prompts` captions outside the training ones, for the twin on x0 latents and for the
judge on decoded x0 previews (what the twin replaces); recorded in `TRAINING.json`.
"""

import argparse
import json
import os
import sys

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, batch_indices, optimizer_step, publish, resume, save_checkpoint  # noqa: E402

from noisekit import seed_noise  # noqa: E402
from noisekit.core.sampler import Sampler  # noqa: E402
from noisekit.rewards.latent_twin import LatentTwin, LatentTwinReward, twin_loss  # noqa: E402
from noisekit.search.calibrate import kendall_tau  # noqa: E402
from noisekit.search.scoring import step_sigmas  # noqa: E402
from noisekit.shapes.dataset import heldout_captions, render_scenes, training_captions  # noqa: E402
from noisekit.shapes.judge import HEADS, ShapesJudge, reward_of_logits  # noqa: E402
from noisekit.sources import load_pipeline  # noqa: E402

TRAJECTORY_SEED = 31_000_000  # first noise seed of the trajectories, far from the benchmarks' seeds


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-t2i", help="the pipeline whose trajectories the twin reads")
    parser.add_argument("--teacher_path", default=None, help="a ShapesJudge folder (default: assets/shapes-judge)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_folder", default=None, help="where the twin goes (default: OUTPUT_DIR/twin)")
    parser.add_argument("--num_scenes", type=int, default=20000)
    parser.add_argument("--num_prompts", type=int, default=384)
    parser.add_argument("--num_validation_prompts", type=int, default=32)
    parser.add_argument("--num_seeds", type=int, default=8)
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--max_train_steps", type=int, default=2000)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--checkpointing_steps", type=int, default=250)
    parser.add_argument("--data_seed", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publish_dtype", choices=["float32", "float16"], default="float16")
    args = parser.parse_args(input_args)
    for name in ("num_scenes", "num_prompts", "num_validation_prompts", "num_seeds", "max_train_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.train_batch_size < 2 or args.train_batch_size % 2:
        raise ValueError(f"--train_batch_size must be an even number >= 2 (half scenes, half trajectories), got "
                         f"{args.train_batch_size}.")
    return args


def training_prompts(args):
    """`(train, validation)`: distinct captions of dataset `--data_seed`, none of them held out."""
    needed = args.num_prompts + args.num_validation_prompts
    prompts = training_captions(args.data_seed, needed)
    if len(prompts) < needed:
        raise ValueError(f"need {needed} distinct captions, found {len(prompts)}.")
    return prompts[: args.num_prompts], prompts[args.num_prompts :]


@torch.no_grad()
def teacher_targets(judge, pixels):
    """`{"features": (B, 256), head: logits}` of pixels in [-1, 1]."""
    features = judge.features(pixels)
    return {"features": features, **judge.head_logits(features)}


def stack(chunks):
    return {name: torch.cat([c[name] for c in chunks]) for name in chunks[0]}


def save_atomic(path, tensors, metadata):
    """Write to a temporary name and rename: an interrupted run never leaves half a dataset."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, path + ".partial", metadata=metadata)
    os.replace(path + ".partial", path)


@torch.no_grad()
def make_scenes(pipe, judge, args):
    images, _ = render_scenes(args.data_seed, args.num_scenes, exclude=heldout_captions())
    scale, shift = pipe.vae.config.scaling_factor, getattr(pipe.vae.config, "shift_factor", None) or 0.0
    chunks = []
    for start in range(0, len(images), 500):
        pixels = torch.from_numpy(images[start : start + 500]).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = (pipe.vae.encode(pixels).latent_dist.mean - shift) * scale
        chunks.append({"latents": latents.half(), **teacher_targets(judge, pixels)})
    return stack(chunks)


def pixels_of(images):
    """Decoded images in [0, 1] -> the judge's input: 8-bit quantised (as a saved image) and scaled to [-1, 1]."""
    return (images.float().clamp(0, 1) * 255).round() / 127.5 - 1


@torch.no_grad()
def make_trajectories(pipe, judge, prompts, args, seed_offset, with_previews=False):
    """x0 latents of every step `(N, T - 1, C, h, w)`, final latents, the final images' targets, and (validation)
    the judge's reward of every decoded x0 preview `(N, T - 1)` and of the final image `(N,)`."""
    chunks, per_chunk, sigmas = [], max(1, 64 // args.num_seeds), None
    for start in range(0, len(prompts), per_chunk):
        chunk = prompts[start : start + per_chunk]
        sampler = Sampler(pipe, chunk, num_inference_steps=args.num_inference_steps,
                          guidance_scale=args.guidance_scale)
        first = TRAJECTORY_SEED + seed_offset + start * args.num_seeds
        noise = seed_noise(pipe, range(first, first + len(chunk) * args.num_seeds), sampler.height, sampler.width)
        batch = sampler.start(noise, [p for p in range(len(chunk)) for _ in range(args.num_seeds)])
        steps = list(range(args.num_inference_steps - 1))
        x0 = batch.run(preview_steps=set(steps))
        final = teacher_targets(judge, pixels_of(sampler.decode(batch.latents, "pt")))
        row = {"latents": torch.stack([x0[s].half().cpu() for s in steps], 1),
               "final_latents": batch.latents.half().cpu(), **final}
        if with_previews:
            rows = [p for p in chunk for _ in range(args.num_seeds)]
            row["preview_reward"] = torch.stack([reward_of_logits(judge(pixels_of(sampler.decode(x0[s], "pt"))), rows)
                                                 for s in steps], 1)
            row["final_reward"] = reward_of_logits({k: final[k] for k in HEADS}, rows)
        chunks.append(row)
        sigmas = step_sigmas(sampler)[: args.num_inference_steps - 1]
        print(f"trajectories: {start + len(chunk)}/{len(prompts)} prompts", flush=True)
    return stack(chunks), sigmas


def dataset(path, make, settings, accelerator):
    """`make()`'s tensors and metadata, made once on the main process and stored at `path` with `settings` (what
    the data depends on); a stored file made with other settings raises instead of being read as this run's."""
    if accelerator.is_main_process and not os.path.exists(path):
        tensors, metadata = make()
        save_atomic(path, tensors, {**metadata, **settings})
    accelerator.wait_for_everyone()
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    differ = {k: (metadata.get(k), v) for k, v in settings.items() if metadata.get(k) != v}
    if differ:
        raise ValueError(f"{path} was made with other settings (stored, this run): {differ}; use another "
                         f"--output_dir or delete the file.")
    return load_file(path), metadata


def targets_of(data, index):
    return data["features"][index], {k: data[k][index] for k in HEADS}


def training_batch(scenes, trajectories, sigmas, args, step, accelerator):
    """Half scenes at sigma 0, half trajectory rows at a random step (the final latent counts as a step at sigma
    0); a pure function of the step, as every batch."""
    half = args.train_batch_size // 2
    scene_rows = batch_indices(args.data_seed, step, len(scenes["latents"]), half, accelerator)
    rows = batch_indices(args.data_seed + 1, step, len(trajectories["latents"]), half, accelerator)
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    columns = torch.randint(len(sigmas) + 1, (len(rows),), generator=generator)
    picked = trajectories["latents"][rows, columns.clamp(max=len(sigmas) - 1)]  # one step per row, not all of them
    final = columns == len(sigmas)
    picked[final] = trajectories["final_latents"][rows[final]]
    latents = torch.cat([scenes["latents"][scene_rows], picked]).float()
    sigma_table = torch.tensor([*sigmas, 0.0])
    sigma = torch.cat([torch.zeros(len(scene_rows)), sigma_table[columns]])
    scene_features, scene_logits = targets_of(scenes, scene_rows)
    row_features, row_logits = targets_of(trajectories, rows)
    features = torch.cat([scene_features, row_features]).float()
    logits = {k: torch.cat([scene_logits[k], row_logits[k]]).float() for k in HEADS}
    device = accelerator.device
    return latents.to(device), sigma.to(device), features.to(device), {k: v.to(device) for k, v in logits.items()}


@torch.no_grad()
def validate(twin, judge, validation, sigmas, prompts, args):
    """Per-step Kendall tau with the final reward: the twin on x0 latents, the judge on decoded previews."""
    reward = LatentTwinReward(twin, judge)
    rows = [p for p in prompts for _ in range(args.num_seeds)]
    final = validation["final_reward"].view(len(prompts), args.num_seeds)
    out = {}
    for s, sigma in enumerate(sigmas):
        twin_scores = reward(validation["latents"][:, s].float(), rows, sigma=sigma)
        out[f"step-{s}"] = {"twin": round(kendall_tau(twin_scores.view_as(final), final), 4),
                            "judge_on_decoded": round(kendall_tau(validation["preview_reward"][:, s].view_as(final),
                                                                  final), 4)}
    twin.train()
    return out


def main(args):
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    pipe = load_pipeline(args.model)
    from noisekit.shapes.assets import load_shapes_judge

    judge = (ShapesJudge.from_pretrained(args.teacher_path).eval() if args.teacher_path else load_shapes_judge())
    train_prompts, val_prompts = training_prompts(args)
    record = {"model": args.model, "data_seed": str(args.data_seed)}
    teacher = {"teacher": args.teacher_path or "assets/shapes-judge"}
    scenes, _ = dataset(os.path.join(args.output_dir, "scenes.safetensors"),
                        lambda: (make_scenes(pipe, judge, args), {}),
                        {**record, **teacher, "num_scenes": str(args.num_scenes)}, accelerator)
    sampling = {**record, **teacher, "num_seeds": str(args.num_seeds),
                "num_inference_steps": str(args.num_inference_steps), "guidance_scale": str(args.guidance_scale)}

    def trajectories(prompts, offset, previews):
        tensors, sigmas = make_trajectories(pipe, judge, prompts, args, offset, previews)
        return tensors, {"sigmas": json.dumps(sigmas)}

    train, meta = dataset(os.path.join(args.output_dir, "trajectories.safetensors"),
                          lambda: trajectories(train_prompts, 0, False),
                          {**sampling, "num_prompts": str(args.num_prompts)}, accelerator)
    validation, _ = dataset(os.path.join(args.output_dir, "validation.safetensors"),
                            lambda: trajectories(val_prompts, 10_000_000, True),
                            {**sampling, "num_prompts": str(args.num_validation_prompts)}, accelerator)
    sigmas = json.loads(meta["sigmas"])

    latent_shape = scenes["latents"].shape[1:]
    twin = LatentTwin(latent_channels=latent_shape[0], sample_size=latent_shape[-1], width=args.width,
                      feature_width=scenes["features"].shape[1])
    optimizer = torch.optim.AdamW(twin.parameters(), args.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.max_train_steps,
                                                    pct_start=0.1)
    twin, optimizer, scheduler = accelerator.prepare(twin, optimizer, scheduler)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    judge.to(accelerator.device).requires_grad_(False)
    heads_of = judge.head_logits
    twin.train()
    while step < args.max_train_steps:
        latents, sigma, features, logits = training_batch(scenes, train, sigmas, args, step, accelerator)
        loss = twin_loss(twin, heads_of, latents, sigma, features, logits)
        optimizer_step(accelerator, loss, list(twin.parameters()), optimizer, lr_scheduler=scheduler)
        step += 1
        if step % 100 == 0:
            accelerator.print(f"step {step}/{args.max_train_steps} loss {loss.item():.4f} {timer.seconds():.0f}s",
                              flush=True)
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), "loss": loss.item()})

    if accelerator.is_main_process:
        model = accelerator.unwrap_model(twin).eval()
        tau = validate(model, judge, validation, sigmas, val_prompts, args)
        for name, value in tau.items():
            print(name, value)
        dtype = torch.float16 if args.publish_dtype == "float16" else torch.float32

        def write(folder):
            model.to(dtype).save_pretrained(folder)
            model.to(torch.float32)

        publish(write, args.output_folder or os.path.join(args.output_dir, "twin"),
                {**record, "data_seed": args.data_seed, "teacher": args.teacher_path or "assets/shapes-judge",
                 "steps": step,
                 "train_seconds": round(timer.seconds(), 1), "num_scenes": args.num_scenes,
                 "num_prompts": args.num_prompts, "num_seeds": args.num_seeds,
                 "num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
                 "sigmas": sigmas, "published_dtype": args.publish_dtype,
                 "validation_prompts": args.num_validation_prompts, "validation_kendall_tau": tau})


if __name__ == "__main__":
    main(parse_args())
