"""What the training scripts share: resumable checkpoints, deterministic batches, atomic asset folders."""

import json
import os
import shlex
import shutil
import sys
import time

import torch


def batch_indices(data_seed, step, dataset_size, batch_size, accelerator):
    """This process's share of the batch of `step`: a pure function of (seed, step), so resuming needs no
    data-loader state and several processes (accelerate) split one global batch."""
    generator = torch.Generator().manual_seed(data_seed * 1_000_003 + step)
    indices = torch.randint(dataset_size, (batch_size,), generator=generator)
    return indices[accelerator.process_index :: accelerator.num_processes]


def optimizer_step(accelerator, loss, params, optimizer, *, lr_scheduler=None, ema=None, max_grad_norm=1.0):
    """Backward, clip, step and zero the gradients; the learning-rate schedule and the EMA follow the step."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    optimizer.zero_grad()
    if ema is not None:
        ema.step(params)


def log_and_checkpoint(accelerator, args, step, loss, timer, log_every=50):
    """Print the loss every `log_every` steps; checkpoint every `args.checkpointing_steps` and at the last step."""
    if step % log_every == 0:
        accelerator.print(f"step {step} loss {loss.item():.4f} {timer.seconds():.0f}s", flush=True)
    if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
        save_checkpoint(accelerator, args.output_dir, step, {"seconds": timer.seconds(), "loss": loss.item()})


def latest_checkpoint(output_dir):
    """`(step, path)` of the newest complete checkpoint under `output_dir/checkpoints`, or `(0, None)`."""
    folder = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(folder):
        return 0, None
    steps = [int(name.split("-")[1]) for name in os.listdir(folder) if name.startswith("checkpoint-")]
    if not steps:
        return 0, None
    step = max(steps)
    return step, os.path.join(folder, f"checkpoint-{step}")


def save_checkpoint(accelerator, output_dir, step, progress, keep=2):
    """Save the accelerator state at `step` with `progress` (a JSON dict: seconds, losses); written to a
    temporary folder and renamed, so a crash never leaves a half checkpoint that resuming would pick up. Older
    checkpoints beyond `keep` are removed."""
    folder = os.path.join(output_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f"checkpoint-{step}")
    if accelerator.is_main_process:
        partial = os.path.join(folder, f".partial-{step}")
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(os.path.join(folder, f".partial-{step}"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(folder, f".partial-{step}", "progress.json"), "w") as f:
            json.dump(progress, f)
        os.replace(os.path.join(folder, f".partial-{step}"), final)
        old = sorted(int(n.split("-")[1]) for n in os.listdir(folder) if n.startswith("checkpoint-"))
        for s in old[:-keep]:
            shutil.rmtree(os.path.join(folder, f"checkpoint-{s}"))


def publish(folder_writer, destination, record):
    """Write an asset folder with `folder_writer(tmp)`, add `TRAINING.json` (`record` plus the exact command),
    and move it into place in one rename."""
    partial = destination.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    folder_writer(partial)
    record = {"command": command_line(), **record}
    with open(os.path.join(partial, "TRAINING.json"), "w") as f:
        json.dump(record, f, indent=2)
    backup = destination.rstrip("/") + ".old"
    if os.path.exists(destination):
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(destination, backup)
    os.replace(partial, destination)
    shutil.rmtree(backup, ignore_errors=True)
    print(f"wrote {destination}; reproduce with: {record['command']}")


def command_line():
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def resume(accelerator, output_dir):
    """Load the newest checkpoint if there is one; returns `(step, progress)`."""
    step, path = latest_checkpoint(output_dir)
    if path is None:
        return 0, {"seconds": 0.0}
    accelerator.load_state(path)
    with open(os.path.join(path, "progress.json")) as f:
        progress = json.load(f)
    accelerator.print(f"resumed from {path}")
    return step, progress


class Timer:
    """Wall-clock seconds of training, carried across resumes in the checkpoint's progress record."""

    def __init__(self, already=0.0):
        self.start = time.time() - already

    def seconds(self):
        return time.time() - self.start


def shapes_latents(vae, tokenizer, data_seed, num_scenes, max_tokens, empty_caption_probability=0.1,
                   batch_size=500, with_captions=False):
    """Shapes scenes encoded once: posterior `(mean, std)` of each latent, and caption token ids with
    `empty_caption_probability` of the captions emptied (for classifier-free guidance); with `with_captions`,
    the captions too."""
    from noisekit.shapes.dataset import heldout_captions, render_scenes

    images, scenes = render_scenes(data_seed, num_scenes, exclude=heldout_captions())
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            dist = vae.encode(chunk).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    empty = torch.rand(len(scenes), generator=torch.Generator().manual_seed(data_seed)) < empty_caption_probability
    captions = ["" if drop else s.caption for s, drop in zip(scenes, empty.tolist())]
    token_ids = tokenizer(captions, padding="max_length", max_length=max_tokens, truncation=True,
                          return_tensors="pt").input_ids
    if with_captions:
        return torch.cat(means), torch.cat(stds), token_ids, captions
    return torch.cat(means), torch.cat(stds), token_ids
