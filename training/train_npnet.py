"""Train NPNet on collected noise pairs -> a `NoisePromptNet.save_pretrained` folder (`output_dir/npnet`).

    python training/train_npnet.py --data_dir runs/npd-shapes --pretrained_model_name_or_path assets/shapes-t2i-eps \\
        --shapes --output_dir runs/npnet-shapes
    accelerate launch training/train_npnet.py ...   # several processes split each batch of 64
    # SDXL as in the paper: --data_dir npd-sdxl --pretrained_model_name_or_path <sdxl> --dtype float16 \\
    #     --swin_weights swin_tiny_patch4_window7_224.safetensors   (timm ImageNet weights; random init without)

The official recipe (Zhou et al.; `noisekit.npnet` for the architecture): plain MSE between NPNet(x_T, c) and
x'_T, AdamW (lr 1e-4, weight decay 0.01, also on alpha and beta), batch 64, 30 epochs, no schedule, no clipping,
fp32, a random 90/10 split. Unlike the official trainer, every sample is conditioned on its own prompt (the
official code's `prompt[0]` for the whole batch only with `--official_first_prompt`), and the prompt
embeddings (`pipe.encode_prompt(p)[0]`, as `noisekit.transforms.golden` feeds them at inference) are computed once
per distinct prompt into `output_dir/prompt_embeds.npy` (memory-mapped). The unused parameters of the official
layout (`unet_svd.bn`, the Swin classifier head) are frozen.

The architecture is the official one (Swin-T residual branch) sized to the data and the pipeline (latent channels
and side, tokens, text width: SDXL gives the official 30,470,427-parameter net; SD3 / FLUX.1 data of
`collect_npd.py` gives 16 channels and the pipeline's own prompt sequence, see `noisekit.transforms.golden`); `--shapes` is the shapes-world preset
(sample_size 16, text_embed_dim 64, max_text_tokens 32, `SMALL_SWIN`), `--small_swin` the small branch alone.
Batches are drawn by `common.batch_indices` (with replacement; an epoch = train pairs / batch steps).
Validation: MSE on the held-out split and the MSE of the identity baseline (NPNet(x) = x), in TRAINING.json.
Resumes from `output_dir/checkpoints` on restart; every step's random draws (batch, drop-path) are seeded from
(seed, step), so a run killed and resumed ends with the weights of an uninterrupted one.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import Timer, batch_indices, publish, resume, save_checkpoint  # noqa: E402

from noisekit.transforms.npd import load_npd  # noqa: E402
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet  # noqa: E402

SHAPES_PRESET = {"sample_size": 16, "text_embed_dim": 64, "max_text_tokens": 32}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", nargs="+", required=True, help="folders written by collect_npd.py")
    parser.add_argument("--pretrained_model_name_or_path", required=True,
                        help="the pipeline whose text encoder(s) give the prompt embeddings")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--shapes", action="store_true", help="the shapes-world preset (small Swin, checked sizes)")
    parser.add_argument("--small_swin", action="store_true", help="the small residual branch (SMALL_SWIN)")
    parser.add_argument("--swin_weights", default=None, help="timm Swin-T ImageNet weights for the residual branch")
    parser.add_argument("--official_first_prompt", action="store_true",
                        help="condition the whole batch on its first prompt, as the official trainer does")
    parser.add_argument("--margin", type=float, default=None, help="re-filter pairs to reward gain > margin")
    parser.add_argument("--validation_fraction", type=float, default=0.1)
    parser.add_argument("--split", choices=["pair", "prompt"], default="pair",
                        help="hold out random pairs (official) or whole prompts")
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--num_train_epochs", type=float, default=30)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--validation_steps", type=int, default=500)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="text encoder dtype")
    parser.add_argument("--embedding_dtype", choices=["float16", "float32"], default="float16",
                        help="dtype of the cached prompt embeddings")
    parser.add_argument("--resolution", type=int, default=None, help="image side (for SDXL's size ids)")
    parser.add_argument("--data_seed", type=int, default=0, help="batch sampling")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation and drop-path")
    return parser.parse_args(input_args)


def load_data(data_dirs, margin):
    """All kept pairs of `data_dirs` with prompt indices into one merged prompt list."""
    prompts, parts, collections = [], [], []
    for data_dir in data_dirs:
        tensors, local = load_npd(data_dir, margin)
        index = {p: i for i, p in enumerate(prompts)}
        for prompt in local:
            if prompt not in index:
                index[prompt] = len(prompts)
                prompts.append(prompt)
        remap = torch.tensor([index[p] for p in local], dtype=torch.long)
        tensors["prompt_index"] = remap[tensors["prompt_index"]]
        parts.append(tensors)
        with open(os.path.join(data_dir, "collection.json")) as f:
            collections.append(json.load(f))
    shapes = {tuple(part["source"].shape[1:]) for part in parts}
    if len(shapes) != 1:
        raise ValueError(f"the data folders hold noise of different shapes {sorted(shapes)}.")
    data = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    if len(data["seed"]) < 2:
        raise ValueError(f"{data_dirs} hold {len(data['seed'])} kept pairs; at least 2 are needed.")
    return data, prompts, collections


def split(data, args):
    """`(train_ids, val_ids)`: a seeded random split of the pairs, or of the prompts (`--split prompt`)."""
    count = len(data["seed"])
    generator = torch.Generator().manual_seed(args.split_seed)
    if args.split == "pair":
        order = torch.randperm(count, generator=generator)
        num_val = min(count - 1, math.ceil(args.validation_fraction * count)) if args.validation_fraction else 0
        return order[num_val:].sort().values, order[:num_val].sort().values
    used = data["prompt_index"].unique()
    order = used[torch.randperm(len(used), generator=generator)]
    num_val = min(len(used) - 1, math.ceil(args.validation_fraction * len(used))) if args.validation_fraction else 0
    held = torch.isin(data["prompt_index"], order[:num_val])
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def embedding_cache(args, accelerator, prompts):
    """`(P, T, D)` memory-mapped prompt embeddings, one row per distinct prompt, computed once (main process)."""
    path = os.path.join(args.output_dir, "prompt_embeds.npy")
    meta_path = path + ".json"
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
    meta = {"prompts_hash": digest, "pipeline": args.pretrained_model_name_or_path, "dtype": args.dtype,
            "embedding_dtype": args.embedding_dtype, "resolution": args.resolution}
    if accelerator.is_main_process:
        current = None
        if os.path.exists(meta_path) and os.path.exists(path):
            with open(meta_path) as f:
                current = json.load(f)
        if current is None or {k: current.get(k) for k in meta} != meta:
            from diffusers import DiffusionPipeline

            from noisekit.sources import absent_components
            from noisekit.transforms.golden import prompt_embeddings

            pipe = DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, dtype=DTYPES[args.dtype],
                                                     **absent_components(args.pretrained_model_name_or_path))
            pipe = pipe.to(accelerator.device)
            height = width = args.resolution
            first = prompt_embeddings(pipe, prompts[:1], height, width)
            os.makedirs(args.output_dir, exist_ok=True)
            partial = path + ".partial.npy"
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=args.embedding_dtype,
                                              shape=(len(prompts), *first.shape[1:]))
            with torch.no_grad():
                for start in range(0, len(prompts), 64):
                    rows = prompt_embeddings(pipe, prompts[start : start + 64], height, width)
                    array[start : start + len(rows)] = rows.float().cpu().numpy().astype(args.embedding_dtype)
            array.flush()
            del array, pipe
            os.replace(partial, path)
            with open(meta_path, "w") as f:
                json.dump({**meta, "shape": [len(prompts), *first.shape[1:]]}, f)
    accelerator.wait_for_everyone()
    return np.load(path, mmap_mode="r")


def build_npnet(args, sample_size, tokens, width, latent_channels=4):
    config = {"sample_size": sample_size, "text_embed_dim": width, "max_text_tokens": tokens}
    if args.shapes and (config != SHAPES_PRESET or latent_channels != 4):
        raise ValueError(f"`--shapes` expects {SHAPES_PRESET} (4 x 16 x 16 latents, 32 x 64 prompt embeddings), the "
                         f"data and pipeline give {dict(config, latent_channels=latent_channels)}.")
    small = args.shapes or args.small_swin
    torch.manual_seed(args.seed)
    npnet = NoisePromptNet(**config, latent_channels=latent_channels, swin_kwargs=dict(SMALL_SWIN) if small else None)
    if args.swin_weights:
        if small:
            raise ValueError("`--swin_weights` initialises the official Swin-T branch, not the small one.")
        from timm.models import load_checkpoint

        load_checkpoint(npnet.unet_embedding.swin, args.swin_weights, strict=True)
    # Parameters the official forward never reads: kept for checkpoint compatibility, frozen (and DDP-safe).
    frozen = [npnet.unet_svd.bn, npnet.unet_embedding.swin.get_classifier()]
    for module in frozen:
        module.requires_grad_(False)
    return npnet


def step_seed(seed, step):
    """The RNG seed of training step `step` (drop-path), a pure function like `common.batch_indices`."""
    return seed * 1_000_003 + 7919 * step + 1


def embeds_of(cache, prompt_index, device):
    rows = cache[prompt_index.numpy()]
    return torch.from_numpy(np.ascontiguousarray(rows)).to(device, torch.float32)


@torch.no_grad()
def evaluate(npnet, data, ids, cache, device, batch_size):
    """`(model MSE, identity MSE)` over the pairs `ids` (per-element means), with the net in eval mode."""
    was_training = npnet.training
    npnet.eval()
    model_sum = identity_sum = 0.0
    elements = 0
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        source = data["source"][rows].float().to(device)
        target = data["target"][rows].float().to(device)
        pred = npnet(source, embeds_of(cache, data["prompt_index"][rows], device))
        model_sum += torch.nn.functional.mse_loss(pred, target, reduction="sum").item()
        identity_sum += torch.nn.functional.mse_loss(source, target, reduction="sum").item()
        elements += target.numel()
    npnet.train(was_training)
    return model_sum / max(elements, 1), identity_sum / max(elements, 1)


def main(args):
    accelerator = Accelerator()
    data, prompts, collections = load_data(args.data_dir, args.margin)
    train_ids, val_ids = split(data, args)
    cache = embedding_cache(args, accelerator, prompts)
    sample_size = data["source"].shape[-1]
    if data["source"].shape[-2] != sample_size:
        raise ValueError(f"NPNet needs square latents, the data's are {tuple(data['source'].shape[-2:])}.")
    npnet = build_npnet(args, sample_size, cache.shape[1], cache.shape[2], data["source"].shape[1])
    params = [p for p in npnet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    npnet, optimizer = accelerator.prepare(npnet, optimizer)
    step, progress = resume(accelerator, args.output_dir)
    timer = Timer(progress["seconds"])
    history = progress.get("history", [])
    max_steps = args.max_train_steps or math.ceil(args.num_train_epochs * len(train_ids) / args.train_batch_size)
    accelerator.print(f"{len(train_ids)} train / {len(val_ids)} val pairs, {len(prompts)} prompts, "
                      f"{max_steps} steps", flush=True)
    device = accelerator.device

    def validate():
        if accelerator.is_main_process and len(val_ids):
            val_mse, identity = evaluate(accelerator.unwrap_model(npnet), data, val_ids, cache, device,
                                         args.eval_batch_size)
            history.append({"step": step, "val_mse": val_mse, "identity_mse": identity})
            accelerator.print(f"step {step} val mse {val_mse:.6f} (identity {identity:.6f})", flush=True)

    npnet.train()
    loss = torch.tensor(float("nan"))
    while step < max_steps:
        rows = train_ids[batch_indices(args.data_seed, step, len(train_ids), args.train_batch_size, accelerator)]
        source = data["source"][rows].float().to(device)
        target = data["target"][rows].float().to(device)
        prompt_index = data["prompt_index"][rows]
        if args.official_first_prompt:
            prompt_index = prompt_index[:1]  # the official `encode_prompt(prompt=prompt[0])`, broadcast
        # drop-path draws from a seed of (seed, step), like the batches: a run resumed after a kill draws what an
        # uninterrupted run draws at the same step, so both end with the same weights
        torch.manual_seed(step_seed(args.seed, step))
        pred = npnet(source, embeds_of(cache, prompt_index, device))
        loss = torch.nn.functional.mse_loss(pred, target)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 50 == 0:
            accelerator.print(f"step {step} loss {loss.item():.6f} {timer.seconds():.0f}s", flush=True)
        if step % args.validation_steps == 0 and step != max_steps:
            validate()
        if step % args.checkpointing_steps == 0 or step == max_steps:
            save_checkpoint(accelerator, args.output_dir, step,
                            {"seconds": timer.seconds(), "loss": loss.item(), "history": history})

    if accelerator.is_main_process:
        model = accelerator.unwrap_model(npnet).eval()
        val_mse, identity = evaluate(model, data, val_ids, cache, device, args.eval_batch_size) \
            if len(val_ids) else (None, None)
        train_mse, train_identity = evaluate(model, data, train_ids[:1024], cache, device, args.eval_batch_size)
        record = {
            "data_dir": args.data_dir, "pipeline": args.pretrained_model_name_or_path,
            "collections": [{k: c.get(k) for k in ("inversion", "num_inference_steps", "denoising_guidance_scale",
                                                   "inversion_guidance_scale", "reward", "margin", "num_items")}
                            for c in collections],
            "train_pairs": len(train_ids), "val_pairs": len(val_ids), "num_prompts": len(prompts),
            "split": args.split, "validation_fraction": args.validation_fraction, "split_seed": args.split_seed,
            "margin": args.margin, "official_first_prompt": args.official_first_prompt, "data_seed": args.data_seed,
            "steps": step, "epochs": step * args.train_batch_size / max(len(train_ids), 1),
            "train_batch_size": args.train_batch_size, "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay, "residual_init": args.swin_weights or "random",
            "val_mse": val_mse, "val_identity_mse": identity,
            "val_mse_over_identity": val_mse / identity if val_mse is not None and identity else None,
            "train_mse": train_mse, "train_identity_mse": train_identity,
            "alpha": model.alpha.item(), "beta": model.beta.item(),
            "final_loss": loss.item(), "history": history, "train_seconds": round(timer.seconds(), 1),
        }
        accelerator.print(f"val mse {val_mse} vs identity {identity}", flush=True)
        publish(lambda folder: model.save_pretrained(folder), os.path.join(args.output_dir, "npnet"), record)
        return record
    return None


if __name__ == "__main__":
    main(parse_args())
