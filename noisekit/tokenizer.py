"""The real CLIP BPE tokenizer, built offline from the vocabulary file that open_clip ships.

open_clip carries `bpe_simple_vocab_16e6.txt.gz` (the merges of OpenAI's CLIP); transformers' `CLIPTokenizer`
wants `vocab.json` + `merges.txt`. Both describe the same 49,408-token vocabulary, so we derive the pair once.
"""

import gzip
import json
import os
import tempfile
from functools import lru_cache

from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
_NUM_MERGES = CLIP_VOCAB_SIZE - 256 * 2 - 2  # byte tokens, byte tokens with </w>, and the two special tokens


def _bytes_to_unicode():
    # The reversible byte -> printable character table of GPT-2 / CLIP BPE.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _open_clip_bpe_path():
    import open_clip.tokenizer

    return os.path.join(os.path.dirname(open_clip.tokenizer.__file__), "bpe_simple_vocab_16e6.txt.gz")


@lru_cache(maxsize=None)
def _vocabulary_files():
    with gzip.open(_open_clip_bpe_path(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : _NUM_MERGES + 1]
    units = _bytes_to_unicode()
    tokens = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder = tempfile.mkdtemp(prefix="noisekit-clip-bpe-")
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: index for index, token in enumerate(tokens)}, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")


def clip_tokenizer(model_max_length=77):
    """A `transformers.CLIPTokenizer` identical to OpenAI CLIP's, padded with `<|endoftext|>` like SD's."""
    vocab_file, merges_file = _vocabulary_files()
    return CLIPTokenizer(
        vocab_file, merges_file, model_max_length=model_max_length, pad_token="<|endoftext|>"
    )
