"""Does the shapes text encoder carry a caption's stated position? A linear probe on its outputs.

    python benchmarks/text_position_probe.py --model assets/shapes-t2i

Both shapes pipelines (`shapes-t2i` and `shapes-flow`, which links the same encoder) condition on this frozen CLIP
text encoder. A multinomial logistic regression reads the position (one of the nine cells, or none stated) of
one-object training captions from (a) the mean of the encoder's output tokens and (b) all of them (what
cross-attention and MMDiT's joint attention read); accuracy on captions the probe did not fit. If (b) reads
positions, the encoder is not what keeps a denoiser from rendering them.
"""

import argparse

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from noisekit.shapes.captions import parse_caption
from noisekit.shapes.scenes import caption, sample_scene


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-t2i")
    parser.add_argument("--num_captions", type=int, default=3000, help="one-object captions (2/3 fit, 1/3 test)")
    parser.add_argument("--data_seed", type=int, default=123)
    parser.add_argument("--steps", type=int, default=300)
    return parser.parse_args(input_args)


def captions_with_positions(count, seed):
    texts, labels, index = [], [], 0
    while len(texts) < count:
        text = caption(sample_scene(seed, index))
        index += 1
        parsed = parse_caption(text)
        if len(parsed["objects"]) == 1:
            texts.append(text)
            labels.append(parsed.get("position") or "none")
    return texts, labels


def probe_accuracy(features, labels, fit, steps):
    """Held-out accuracy of a logistic regression fitted on the first `fit` rows (features standardised on them)."""
    x = (features - features[:fit].mean(0)) / (features[:fit].std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], int(labels.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x[:fit] @ weight + bias, labels[:fit]) + 1e-4 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(((x[fit:] @ weight + bias).argmax(1) == labels[fit:]).float().mean())


def main(args):
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder").eval()
    texts, names = captions_with_positions(args.num_captions, args.data_seed)
    classes = sorted(set(names))
    labels = torch.tensor([classes.index(n) for n in names])
    with torch.no_grad():
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        hidden = torch.cat([encoder(ids[i : i + 256]).last_hidden_state for i in range(0, len(texts), 256)])
    fit = len(texts) * 2 // 3
    majority = float((labels[fit:] == labels[fit:].mode().values).float().mean())
    print(f"{len(texts)} one-object captions, {len(classes)} position classes; held-out majority class {majority:.3f}")
    for name, features in (("mean of the output tokens", hidden.mean(1)), ("all output tokens", hidden.flatten(1))):
        print(f"{name:26s} held-out accuracy {probe_accuracy(features, labels, fit, args.steps):.3f}")


if __name__ == "__main__":
    main(parse_args())
