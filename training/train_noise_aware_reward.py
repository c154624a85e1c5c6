"""Distil a clean registry reward into noise-aware rewards of x0 previews (TTSnap's self-distillation).

    python training/train_noise_aware_reward.py --teacher shapes-judge --output_dir runs/naj
    accelerate launch training/train_noise_aware_reward.py --teacher shapes-judge --output_dir runs/naj

1. Data (once, in `output_dir/data.safetensors`): `--num_seeds` trajectories for each of `--num_prompts` prompts
   (shapes-world training captions, or `--prompt_file`), sampled with the pipeline; the x0 preview of every step in
   `--step_targets` is decoded and kept as an 8-bit image, and the teacher's reward of the *final* image is the
   label.
2. Curriculum from clean to noisy (TTSnap Sec. 2.4 of the reference notes): for each step s in `--step_targets`
   (descending), `--steps_per_stage` optimiser steps, AdamW state reset and the learning rate decayed linearly
   to `--min_lr_scale` within the stage. Two students, both starting from the teacher's weights:
   - the per-stage student trains on step s only and is saved after its stage (`stages/step-{s}`, TTSnap's
     `Ct{s}`); its weights carry on to the next, noisier step;
   - the sigma-conditioned student trains on steps drawn from every stage reached so far, reading sigma.
   Loss: MSE to the teacher's raw final-image reward.
3. Validation on held-out prompts: per-prompt Kendall tau between each step's score and the final reward, for the
   teacher on previews (base), the per-stage and the sigma students; written to TRAINING.json.

Output `output_dir/noise-aware`: load it with `load_reward("noise-aware", path=..., mode="sigma"|"stages")`.
Resumes from `output_dir/checkpoints` on restart.

`--student latent` distils into `LatentRewardModel`s (`noisekit.rewards.latent`) that score the x0 *latents*
with no VAE decode: the data step stores the previews as float16 latents (plus the final latents, and decoded
validation previews for the teacher's baseline); both students start at random and first train a warm-up stage
on the final latents at sigma = 0 (they cannot start as the teacher, which reads pixels); the curriculum,
losses and validation are the same. With `--warmup_scenes N` a first warm-up comes before that one: N rendered
shapes scenes (training captions only) encoded with the VAE and paired with their own, another scene's and a
near-miss caption, labelled by the teacher (`training/warmup_scenes.py`, stored once in
`output_dir/warmup.safetensors`); a few hundred prompts' trajectories alone are memorised, not learnt. Output
`output_dir/noise-aware-latent`:
`load_reward("noise-aware-latent", path=..., mode="sigma"|"stages")`.

    python training/train_noise_aware_reward.py --student latent --output_dir runs/najl --publish_dtype float16
"""

import argparse
import json
import os
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, batch_indices, publish, resume, save_checkpoint  # noqa: E402
from warmup_scenes import load_warmup_data, make_warmup_data, save_warmup_data  # noqa: E402

from noisekit.search.calibrate import kendall_tau  # noqa: E402
from noisekit.core.families import decode  # noqa: E402
from noisekit.core.noise import seed_noise  # noqa: E402
from noisekit.rewards import load_reward  # noqa: E402
from noisekit.rewards.latent import LatentRewardModel  # noqa: E402
from noisekit.rewards.noise_aware import DistilledRewardModel  # noqa: E402
from noisekit.core.sampler import Sampler  # noqa: E402
from noisekit.search.strategies import step_sigmas  # noqa: E402

LOSSES = ("mse", "ranking")
STUDENTS = ("image", "latent")
DEFAULT_LEARNING_RATES = {"image": 1e-5, "latent": 1e-3}  # a copy of the teacher is fine-tuned, a latent CNN trained


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_model_name_or_path", default=None,
                        help="diffusers pipeline folder or hub id (default: the shapes-t2i asset)")
    parser.add_argument("--teacher", default="shapes-judge", help="registry name of the clean reward")
    parser.add_argument("--teacher_kwargs", default="{}", help="JSON options of the teacher's loader, e.g. a path")
    parser.add_argument("--student", choices=STUDENTS, default="image",
                        help="image: copies of the teacher on decoded previews; latent: small CNNs on x0 latents "
                             "(no decode when scoring)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--prompt_file", default=None, help="one prompt per line (default: shapes-world captions)")
    parser.add_argument("--num_prompts", type=int, default=1024, help="training prompts")
    parser.add_argument("--num_validation_prompts", type=int, default=64)
    parser.add_argument("--num_seeds", type=int, default=8, help="trajectories per prompt")
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--step_targets", default=None,
                        help="comma-separated steps, trained in descending order (default: 0.75 T - 1 down to 0)")
    parser.add_argument("--steps_per_stage", type=int, default=300)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--generation_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="default 1e-5 for image students (TTSnap uses 3e-6 to 5e-7 on ViT rewards; 1e-4 lowered "
                             "the shapes judge's validation tau), 1e-3 for latent students (trained from scratch)")
    parser.add_argument("--adapter_learning_rate", type=float, default=1e-3)
    parser.add_argument("--min_lr_scale", type=float, default=0.5)
    parser.add_argument("--warmup_steps", type=int, default=None,
                        help="latent students: steps on the final latents at sigma 0 before the curriculum "
                             "(default --steps_per_stage)")
    parser.add_argument("--warmup_scenes", type=int, default=0,
                        help="latent students: rendered shapes scenes (training captions only) encoded with the VAE and "
                             "labelled by the teacher for their own, another scene's and a near-miss caption; the "
                             "students first train on these clean pairs (training/warmup_scenes.py)")
    parser.add_argument("--warmup_scene_steps", type=int, default=1000, help="steps on the warm-up scenes")
    parser.add_argument("--warmup_noise", type=float, default=0.0,
                        help="Gaussian noise of std up to this (uniform per row) added to the warm-up scenes' latents")
    parser.add_argument("--compare_reward", default=None,
                        help="registry name of an image preview reward (e.g. shapes-judge-noise-aware) whose tau on "
                             "the same decoded validation previews is reported as `image`")
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_grad_norm", type=float, default=5.0)
    parser.add_argument("--loss", choices=LOSSES, default="mse",
                        help="mse: TTSnap's MSE to the teacher's final reward; ranking: that MSE plus a pairwise "
                             "Bradley-Terry loss between the seeds of each prompt (batches are then whole prompts), "
                             "since pruning only needs the order within a prompt")
    parser.add_argument("--ranking_weight", type=float, default=1.0, help="weight of the pairwise term")
    parser.add_argument("--ranking_temperature", type=float, default=0.05,
                        help="tau of P(i beats j) = sigmoid((s_i - s_j) / tau), in the teacher's units")
    parser.add_argument("--checkpointing_steps", type=int, default=300)
    parser.add_argument("--publish_stages", default=None,
                        help="comma-separated steps whose per-stage checkpoints the published folder holds "
                             "(default: every trained step; the stages reward then uses the nearest one by sigma)")
    parser.add_argument("--publish_dtype", choices=["float32", "float16"], default="float32",
                        help="storage dtype of the published weights (they load back as float32)")
    parser.add_argument("--data_seed", type=int, default=7)
    parser.add_argument("--seed", type=int, default=2000)
    args = parser.parse_args(input_args)
    if args.loss == "ranking" and args.train_batch_size % args.num_seeds:
        raise ValueError(f"--loss ranking takes whole prompts: --train_batch_size ({args.train_batch_size}) must be a "
                         f"multiple of --num_seeds ({args.num_seeds}).")
    for name in ("num_prompts", "num_validation_prompts", "num_seeds", "num_inference_steps", "steps_per_stage",
                 "train_batch_size", "generation_batch_size", "checkpointing_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.num_seeds < 2:
        raise ValueError(f"--num_seeds must be >= 2 (rankings within a prompt are validated), got {args.num_seeds}.")
    T = args.num_inference_steps
    targets = ([int(s) for s in args.step_targets.split(",")] if args.step_targets
               else list(range(max(0, round(0.75 * T) - 1), -1, -1)))
    if any(not 0 <= s < T - 1 for s in targets) or len(set(targets)) != len(targets):
        raise ValueError(f"--step_targets must be distinct steps in [0, {T - 2}], got {targets}.")
    args.step_targets = sorted(targets, reverse=True)
    published = ([int(s) for s in args.publish_stages.split(",")] if args.publish_stages else args.step_targets)
    if not published or any(s not in args.step_targets for s in published):
        raise ValueError(f"--publish_stages must be trained steps {args.step_targets}, got {published}.")
    args.publish_stages = sorted(set(published), reverse=True)
    args.teacher_kwargs = json.loads(args.teacher_kwargs)
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES[args.student]
    if args.student == "image" and args.warmup_steps is not None:
        raise ValueError("--warmup_steps applies to --student latent (an image student starts as the teacher).")
    if args.student == "latent" and args.warmup_steps is None:
        args.warmup_steps = args.steps_per_stage
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise ValueError(f"--warmup_steps must be >= 0, got {args.warmup_steps}.")
    if args.warmup_scenes and args.student != "latent":
        raise ValueError("--warmup_scenes applies to --student latent (an image student starts as the teacher).")
    if args.warmup_scenes < 0 or args.warmup_scene_steps < 0 or args.warmup_noise < 0:
        raise ValueError("--warmup_scenes, --warmup_scene_steps and --warmup_noise must be >= 0.")
    return args


def read_prompts(args):
    """`(train, validation)` prompt lists: the file's lines, or shapes-world captions outside the held-out set."""
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = list(dict.fromkeys(line.strip() for line in f if line.strip()))
    else:
        from noisekit.shapes.dataset import training_captions

        prompts = training_captions(args.data_seed, args.num_prompts + args.num_validation_prompts)
    count = args.num_prompts + args.num_validation_prompts
    if len(prompts) < count:
        raise ValueError(f"need {count} distinct prompts, found {len(prompts)}.")
    return prompts[: args.num_prompts], prompts[args.num_prompts : count]


@torch.no_grad()
def make_data(pipe, teacher, prompts, args, with_pixels=True):
    """`({name: tensor}, sigmas)`: the teacher's final-image reward `labels` `(P * S,)` (trajectory-major, S seeds
    per prompt), the sigma of each target step, and the x0 previews at the target steps: decoded `pixels`
    `(P * S, K, 3, H, W)` uint8 (when `with_pixels`; decoded and quantised to 8 bits once, as TTSnap reads saved
    PNGs, so training never runs the VAE) and, for latent students, `latents` `(P * S, K, C, h, w)` and the final
    `final_latents` `(P * S, C, h, w)` in float16."""
    previews, latents, finals, labels = [], [], [], []
    per_chunk = max(1, args.generation_batch_size // args.num_seeds)
    sampler = None
    for start in range(0, len(prompts), per_chunk):
        chunk = prompts[start : start + per_chunk]
        sampler = Sampler(pipe, chunk, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale)
        count = len(chunk) * args.num_seeds
        first = args.data_seed * 10_000_000 + start * args.num_seeds
        noise = seed_noise(pipe, range(first, first + count), sampler.height, sampler.width)
        batch = sampler.start(noise, [p for p in range(len(chunk)) for _ in range(args.num_seeds)])
        x0 = batch.run(preview_steps=set(args.step_targets))
        if with_pixels:
            previews.append(torch.stack([to_uint8(decode(pipe, x0[s].to(pipe.vae.dtype), "pt"))
                                         for s in args.step_targets], 1))
        if args.student == "latent":
            latents.append(torch.stack([x0[s].half().cpu() for s in args.step_targets], 1))
            finals.append(batch.latents.half().cpu())
        images = batch.decode("pil")
        labels.append(teacher(images, [p for p in chunk for _ in range(args.num_seeds)]).float().cpu())
        print(f"data: {start + len(chunk)}/{len(prompts)} prompts", flush=True)
    sigmas = step_sigmas(sampler)
    tensors = {"labels": torch.cat(labels)}
    if with_pixels:
        tensors["pixels"] = torch.cat(previews)
    if args.student == "latent":
        tensors.update(latents=torch.cat(latents), final_latents=torch.cat(finals))
    return tensors, [sigmas[s] for s in args.step_targets]


def pairwise_loss(scores, labels, group, temperature):
    """Bradley-Terry loss over the pairs of each group of `group` rows (one prompt's seeds), every pair weighted by
    its label gap so that near-ties count little: sum w_ij softplus(-(s_i - s_j) / tau) / sum w_ij over l_i > l_j."""
    scores, labels = scores.view(-1, group), labels.view(-1, group)
    gap = labels[:, :, None] - labels[:, None, :]
    weight = gap.clamp(min=0)  # pairs (i, j) with l_i > l_j
    margin = (scores[:, :, None] - scores[:, None, :]) / temperature
    return (weight * torch.nn.functional.softplus(-margin)).sum() / weight.sum().clamp(min=1e-12)


WARMUP_SEED_OFFSET = 1000  # the warm-up scenes' dataset seed is data_seed + this (the prompts come from data_seed)


def scene_warmup(args, pipe, teacher, val_prompts, data, accelerator):
    """`(tensors, captions)` of the warm-up scenes (`training/warmup_scenes.py`), made once in
    `output_dir/warmup.safetensors` at the trajectories' resolution; `(None, None)` without `--warmup_scenes`."""
    if not args.warmup_scenes:
        return None, None
    path, seed = os.path.join(args.output_dir, "warmup.safetensors"), args.data_seed + WARMUP_SEED_OFFSET
    if accelerator.is_main_process and not os.path.exists(path):
        from noisekit.shapes.dataset import heldout_captions

        image_size = data["train/final_latents"].shape[-1] * pipe.vae_scale_factor
        tensors, captions = make_warmup_data(vae=pipe.vae, teacher=teacher, num_scenes=args.warmup_scenes, seed=seed,
                                             excluded=heldout_captions() | set(val_prompts), image_size=image_size,
                                             device=accelerator.device)
        save_warmup_data(path, tensors, captions, num_scenes=args.warmup_scenes, seed=seed)
    accelerator.wait_for_everyone()
    return load_warmup_data(path, num_scenes=args.warmup_scenes, seed=seed)


def scene_batch(warmup, captions, args, step, accelerator):
    """`(latents, labels, prompts)` of warm-up pairs for `step`, with Gaussian noise of a random std up to
    `--warmup_noise` per row (a pure function of the step, as every batch)."""
    index = batch_indices(args.data_seed + WARMUP_SEED_OFFSET, step, len(captions), args.train_batch_size,
                          accelerator)
    latents = warmup["latents"][warmup["scene"][index]].float()
    if args.warmup_noise:
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        level = torch.rand(len(index), 1, 1, 1, generator=generator) * args.warmup_noise
        latents = latents + level * torch.randn(latents.shape, generator=generator)
    return latents.to(accelerator.device), warmup["labels"][index], [captions[i] for i in index.tolist()]


def train_batch(args, step, count, accelerator):
    """Trajectory indices of `step`'s batch: random ones (TTSnap), or for the ranking loss all seeds of random
    prompts (trajectories are prompt-major)."""
    if args.loss == "mse":
        return batch_indices(args.data_seed, step, count, args.train_batch_size, accelerator)
    prompts = batch_indices(args.data_seed, step, count // args.num_seeds, args.train_batch_size // args.num_seeds,
                            accelerator)
    return (prompts[:, None] * args.num_seeds + torch.arange(args.num_seeds)).flatten()


def to_uint8(images):
    """[0, 1] images -> uint8 on the CPU, as an 8-bit image file stores them."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def stored_columns(data_path, step_targets, student="image"):
    """Column of each of `step_targets` in the stored previews (`data_path`'s metadata)."""
    from safetensors import safe_open

    with safe_open(data_path, "pt") as f:
        stored = json.loads(f.metadata()["step_targets"])
        needed = "train/latents" if student == "latent" else "train/pixels"
        if needed not in f.keys():  # noqa: SIM118  (safe_open is no mapping)
            raise ValueError(f"{data_path} holds no {needed} for --student {student}; use another --output_dir.")
    missing = [s for s in step_targets if s not in stored]
    if missing:
        raise ValueError(f"{data_path} holds previews of steps {stored}, not {missing}; use another --output_dir.")
    return torch.tensor([stored.index(s) for s in step_targets])


def pixels_of(transform, images, device):
    """Stored uint8 previews -> the reward's preprocessing."""
    return transform(images.to(device).float() / 255, device)


SCENES = -1  # the column of the warm-up scenes' stage (they are no column of the trajectories' inputs)


def stage_plan(args, sigmas, columns_of):
    """`[(step, sigma, column, length)]` in training order: each curriculum stage's step (None for the latent
    warm-ups on rendered scenes, column `SCENES`, and on final latents), noise level, column of the training inputs
    (`training_inputs`) and steps."""
    if args.student == "image":
        return [(s, sigmas[k], int(columns_of[k]), args.steps_per_stage) for k, s in enumerate(args.step_targets)]
    scenes = [(None, 0.0, SCENES, args.warmup_scene_steps)] if args.warmup_scenes and args.warmup_scene_steps else []
    warmup = [(None, 0.0, 0, args.warmup_steps)] if args.warmup_steps else []
    return scenes + warmup + [(s, sigmas[k], int(columns_of[k]) + 1, args.steps_per_stage)
                     for k, s in enumerate(args.step_targets)]


def training_inputs(data, split, student):
    """What the students read, `(N, columns, ...)`: stored uint8 previews, or for latent students the final latents
    (column 0) followed by the stored x0 latents."""
    if student == "image":
        return data[f"{split}/pixels"]
    return torch.cat([data[f"{split}/final_latents"][:, None], data[f"{split}/latents"]], 1)


def model_inputs(student, transform, stored, device):
    """Stored rows -> a student's input: the teacher's preprocessing of pixels, or float32 latents."""
    if student == "image":
        return pixels_of(transform, stored, device)
    return stored.to(device).float()


def make_students(args, latent_shape):
    """`({conditioning: model}, {conditioning: optimizer})` for the per-stage ("none") and sigma students."""
    if args.student == "image":
        students = {c: DistilledRewardModel(args.teacher, args.teacher_kwargs, c) for c in ("none", "sigma")}
        return students, {
            "none": torch.optim.AdamW(students["none"].parameters(), args.learning_rate,
                                      weight_decay=args.weight_decay),
            "sigma": torch.optim.AdamW(
                [{"params": students["sigma"].student.parameters()},
                 {"params": students["sigma"].adapter.parameters(), "lr": args.adapter_learning_rate}],
                args.learning_rate, weight_decay=args.weight_decay)}
    channels, height, width = latent_shape
    if height != width:
        raise ValueError(f"--student latent reads square latents, got {height} x {width}.")
    students = {}
    for c in ("none", "sigma"):
        torch.manual_seed(args.seed)  # a seeded random start (a latent student cannot copy the pixel teacher)
        students[c] = LatentRewardModel(latent_channels=channels, sample_size=height, conditioning=c,
                                        teacher=args.teacher, teacher_kwargs=args.teacher_kwargs)
    return students, {c: torch.optim.AdamW(m.parameters(), args.learning_rate, weight_decay=args.weight_decay)
                      for c, m in students.items()}


def stage_loader(student):
    from noisekit.rewards.latent import load_latent_model
    from noisekit.rewards.noise_aware import load_model

    return load_latent_model if student == "latent" else load_model


def main(args):
    from noisekit.sources import load_pipeline

    torch.set_grad_enabled(True)  # a caller (the CLI, a test session) may have turned gradients off globally
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    pipe = load_pipeline(args.pretrained_model_name_or_path, device=str(accelerator.device), dtype=torch.float32)
    teacher = load_reward(args.teacher, **args.teacher_kwargs).to(accelerator.device).eval()
    train_prompts, val_prompts = read_prompts(args)
    data_path = os.path.join(args.output_dir, "data.safetensors")
    if accelerator.is_main_process and not os.path.exists(data_path):
        from safetensors.torch import save_file

        os.makedirs(args.output_dir, exist_ok=True)
        tensors = {}
        for split, prompts in (("train", train_prompts), ("val", val_prompts)):
            # latent students never read decoded training previews; validation keeps them for the teacher's baseline
            parts, sigmas = make_data(pipe, teacher, prompts, args,
                                      with_pixels=args.student == "image" or split == "val")
            tensors.update({f"{split}/{name}": value for name, value in parts.items()})
            tensors["sigmas"] = torch.tensor(sigmas)
        save_file(tensors, data_path + ".tmp", metadata={"step_targets": json.dumps(args.step_targets)})
        os.replace(data_path + ".tmp", data_path)
    accelerator.wait_for_everyone()
    from safetensors.torch import load_file

    data = load_file(data_path)
    warmup, warmup_captions = scene_warmup(args, pipe, teacher, val_prompts, data, accelerator)
    # a run may train on a subset of the stored steps
    columns_of = stored_columns(data_path, args.step_targets, args.student)
    sigmas = [data["sigmas"].tolist()[c] for c in columns_of]
    train_text = [p for p in train_prompts for _ in range(args.num_seeds)]
    plan = stage_plan(args, sigmas, columns_of)
    inputs = training_inputs(data, "train", args.student)
    stage_sigmas = torch.tensor([sigma for _, sigma, _, _ in plan])
    stage_columns = torch.tensor([column for _, _, column, _ in plan])
    first_trajectory_stage = int((stage_columns == SCENES).sum())
    starts = [sum(length for *_, length in plan[:k]) for k in range(len(plan) + 1)]  # the last is the total

    def stage_of(step):
        """`(stage, steps into it)` of global `step`."""
        stage = max(k for k in range(len(plan)) if starts[k] <= step)
        return stage, step - starts[stage]

    students, optimizers = make_students(args, tuple(inputs.shape[2:]))
    # within each stage the rate falls linearly from lr to min_lr_scale * lr (no warm-up)
    decay = lambda step: 1 - (1 - args.min_lr_scale) * stage_of(step)[1] / plan[stage_of(step)[0]][3]  # noqa: E731
    schedules = {c: torch.optim.lr_scheduler.LambdaLR(o, decay) for c, o in optimizers.items()}
    for c in students:
        students[c], optimizers[c], schedules[c] = accelerator.prepare(students[c], optimizers[c], schedules[c])
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    total = starts[-1]
    stages_dir = os.path.join(args.output_dir, "stages")
    for model in students.values():
        model.train()
    while step < total:
        stage, within = stage_of(step)
        if within == 0:  # a new stage: the optimiser starts afresh (TTSnap re-creates it)
            for optimizer in optimizers.values():
                optimizer.optimizer.state.clear()
        if stage_columns[stage] == SCENES:
            latents, labels, prompts = scene_batch(warmup, warmup_captions, args, step, accelerator)
            clean = torch.zeros(len(prompts), device=accelerator.device)
            student_inputs = {c: (latents, clean) for c in students}
        else:
            index = train_batch(args, step, len(train_text), accelerator)
            labels = data["train/labels"][index]
            prompts = [train_text[i] for i in index.tolist()]
            # the sigma student revisits every trajectory stage reached so far (not the scenes' warm-up)
            drawn = first_trajectory_stage + torch.randint(stage + 1 - first_trajectory_stage, (len(index),),
                                                           generator=torch.Generator().manual_seed(args.seed + step))
            student_inputs = {c: (model_inputs(args.student, teacher.transform, inputs[index, stage_columns[picks]],
                                               accelerator.device), stage_sigmas[picks].to(accelerator.device))
                              for c, picks in (("none", torch.full_like(drawn, stage)), ("sigma", drawn))}
        labels = labels.to(accelerator.device)
        losses = {}
        for c, (batch, batch_sigmas) in student_inputs.items():
            scores = students[c](batch, prompts, batch_sigmas).float()
            loss = torch.nn.functional.mse_loss(scores, labels)
            if args.loss == "ranking" and stage_columns[stage] != SCENES:  # scene pairs form no seed groups
                loss = loss + args.ranking_weight * pairwise_loss(scores, labels, args.num_seeds,
                                                                  args.ranking_temperature)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(students[c].parameters(), args.max_grad_norm)
            optimizers[c].step()
            schedules[c].step()
            optimizers[c].zero_grad()
            losses[c] = loss.item()
        step += 1
        s, sigma, column, _ = plan[stage]
        if step % 50 == 0:
            name = "scenes" if column == SCENES else "final" if s is None else s
            accelerator.print(f"step {step}/{total} stage s={name} loss per-stage "
                              f"{losses['none']:.5f} sigma {losses['sigma']:.5f} {timer.seconds():.0f}s", flush=True)
        stage_done = step == starts[stage + 1]
        if stage_done and s is not None and accelerator.is_main_process:
            model = accelerator.unwrap_model(students["none"])
            model.register_to_config(stage_step=s, stage_sigma=sigma)
            model.save_pretrained(os.path.join(stages_dir, f"step-{s}"))
        if step % args.checkpointing_steps == 0 or stage_done or step == total:
            save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), **losses})

    if accelerator.is_main_process:
        sigma_model = accelerator.unwrap_model(students["sigma"]).eval()
        compare = (load_reward(args.compare_reward).to(accelerator.device).eval() if args.compare_reward
                   else None)
        report = validate(teacher, sigma_model, stages_dir, data, columns_of, val_prompts, sigmas, args,
                          accelerator.device, compare)
        accelerator.print(json.dumps(report, indent=1))
        load_stage = stage_loader(args.student)

        def write(folder):
            dtype = getattr(torch, args.publish_dtype)
            save(sigma_model, folder, dtype)
            stages = []
            for k, s in enumerate(args.step_targets):
                if s in args.publish_stages:
                    checkpoint = load_stage(os.path.join(stages_dir, f"step-{s}"))
                    save(checkpoint, os.path.join(folder, "stages", f"step-{s}"), dtype)
                    stages.append({"step": s, "sigma": sigmas[k], "folder": f"step-{s}"})
            with open(os.path.join(folder, "stages", "stages.json"), "w") as f:
                json.dump(stages, f, indent=1)

        record = {"teacher": args.teacher, "teacher_kwargs": args.teacher_kwargs, "student": args.student,
                  "data_seed": args.data_seed, "steps": step, "num_inference_steps": args.num_inference_steps,
                  "guidance_scale": args.guidance_scale, "learning_rate": args.learning_rate,
                  **({"warmup_steps": args.warmup_steps} if args.student == "latent" else {}),
                  **({"warmup_scenes": args.warmup_scenes, "warmup_scene_steps": args.warmup_scene_steps,
                      "warmup_noise": args.warmup_noise, "warmup_seed": args.data_seed + WARMUP_SEED_OFFSET,
                      "warmup_pairs": len(warmup_captions)} if args.warmup_scenes else {}),
                  "step_targets": args.step_targets, "published_stages": args.publish_stages,
                  "published_dtype": args.publish_dtype, "compare_reward": args.compare_reward, "sigmas": sigmas, "train_seconds": round(timer.seconds(), 1),
                  "validation": report}
        name = "noise-aware-latent" if args.student == "latent" else "noise-aware"
        publish(write, os.path.join(args.output_dir, name), record)


def save(model, folder, dtype):
    """`save_pretrained` in `dtype` without changing `model` (a copy is cast)."""
    import copy

    copy.deepcopy(model).to(dtype).save_pretrained(folder)


@torch.no_grad()
def validate(teacher, sigma_model, stages_dir, data, columns_of, prompts, sigmas, args, device, compare=None):
    """Mean per-prompt Kendall tau of each step's scores against the teacher's final reward: the teacher on decoded
    previews (base), the per-stage and the sigma students on what they read (for latent students also the sigma
    student on the final latents, `final`: how well it learnt the teacher on clean latents), and `compare` (an
    image preview reward, `image`) on the same decoded previews."""
    labels = data["val/labels"].view(len(prompts), args.num_seeds)
    text = [p for p in prompts for _ in range(args.num_seeds)]
    inputs = training_inputs(data, "val", args.student)
    offset = 1 if args.student == "latent" else 0  # the final latents come first
    tau = lambda scores: round(kendall_tau(scores.float().cpu().view_as(labels), labels), 4)  # noqa: E731
    load_stage = stage_loader(args.student)
    report = {}
    for k, s in enumerate(args.step_targets):
        pixels = pixels_of(teacher.transform, data["val/pixels"][:, columns_of[k]], device)
        batch = model_inputs(args.student, teacher.transform, inputs[:, columns_of[k] + offset], device)
        sigma = torch.full((len(text),), sigmas[k], device=device)
        stage_model = load_stage(os.path.join(stages_dir, f"step-{s}")).to(device)
        scores = {"base": teacher.score(pixels, text, torch.zeros_like(sigma)),
                  "stage": stage_model(batch, text, sigma), "sigma": sigma_model(batch, text, sigma)}
        if compare is not None:
            scores["image"] = compare.score(pixels_of(compare.transform, data["val/pixels"][:, columns_of[k]], device),
                                            text, sigma)
        report[f"step-{s}"] = {name: tau(v) for name, v in scores.items()}
    if args.student == "latent":
        final = inputs[:, 0].to(device).float()
        report["final"] = {"sigma": tau(sigma_model(final, text, torch.zeros(len(text), device=device)))}
    return report


if __name__ == "__main__":
    main(parse_args())
