#!/usr/bin/env python3
"""Make models/minilm-l6-squad11/ from the fixture's TensorFlow checkpoint.

    python scripts/convert_fixture.py --fixture PATH/TO/fixtures/minilm-l6-squad11 [-o models/minilm-l6-squad11]

The fixture stores float32 values that are FP16 weights upcast exactly; this writes them back as FP16 safetensors
with Hugging Face `BertForQuestionAnswering` names (checking that the round trip loses nothing), plus the configs
and vocabulary the scripts and Hugging Face need.
"""
import json
import lzma
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.atomic import write_text_atomic  # noqa: E402
from helpers.config import load_config  # noqa: E402
from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.weights import load_tf_checkpoint, load_safetensors, to_hf_state_dict, validate, write_safetensors  # noqa: E402,E501

TOKENIZER_CONFIG = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512,
                    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"}

README = """\
# minilm-l6-squad11

A small BERT for extractive question answering (uncased; 6 layers, hidden size 384, 12 heads, intermediate size
1536; 22.6 M parameters), stored as FP16 safetensors with Hugging Face `BertForQuestionAnswering` names.

* Model: fine-tuned from the all-MiniLM-L6-v2 sentence encoder (Apache-2.0).
* Training data: SQuAD v1.1 train (CC BY-SA 4.0), 3 epochs, sequence length 384, stride 128.
* SQuAD v1.1 dev (all 10,570 questions): EM 73.15 / F1 82.23.

Made by `scripts/convert_fixture.py` from a TensorFlow V2 checkpoint of the same weights (written by TensorFlow; float32
values that are FP16 weights upcast exactly): the checkpoint is read without TensorFlow, renamed to Hugging Face
names (TF kernels `[in, out]` transposed to `[out, in]`) and cast to FP16, which the script checks loses nothing.

| file | what |
|---|---|
| `model.safetensors` | the weights, FP16 |
| `config.json` | Hugging Face `BertConfig` |
| `bert_config.json` | the same as a Google BERT config (what `builder.py -c` reads) |
| `vocab.txt` | uncased WordPiece vocabulary (Google's bert-base-uncased vocabulary) |
| `tokenizer_config.json` | lower-casing and special tokens for Hugging Face tokenizers |

Use it as `builder.py -pt models/minilm-l6-squad11 -c models/minilm-l6-squad11 ...`.
"""


def parse_args(argv):
    parser = StrictParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", required=True, help="the fixture folder (holding tf/, config.json, vocab.txt)")
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "models", "minilm-l6-squad11"))
    return parser.parse_args(argv)


def unpack_checkpoint(tf_folder, scratch):
    """Copy the index and decompress the xz data file into `scratch`; returns the checkpoint prefix there."""
    for name in os.listdir(tf_folder):
        source = os.path.join(tf_folder, name)
        if name.endswith(".xz"):
            with lzma.open(source, "rb") as src, open(os.path.join(scratch, name[:-3]), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            shutil.copy(source, scratch)
    return os.path.join(scratch, "model.ckpt")


def main(argv=None):
    args = parse_args(argv)
    config = load_config(os.path.join(args.fixture, "bert_config.json"))
    with tempfile.TemporaryDirectory() as scratch:
        try:
            weights = load_tf_checkpoint(unpack_checkpoint(os.path.join(args.fixture, "tf"), scratch))
        except lzma.LZMAError as exc:
            raise BertError(f"fixture data file is not valid xz: {exc}") from None
    validate(weights, config)
    state = to_hf_state_dict(weights)
    half = {name: value.astype(np.float16) for name, value in state.items()}
    lossy = [name for name, value in state.items() if not np.array_equal(half[name].astype(np.float32), value)]
    if lossy:
        raise BertError(f"FP16 would change {len(lossy)} tensor(s), e.g. {lossy[0]}: the fixture is not FP16-exact")

    os.makedirs(args.output, exist_ok=True)
    write_safetensors(os.path.join(args.output, "model.safetensors"), half, metadata={"format": "pt"})
    for name in ("config.json", "bert_config.json", "vocab.txt"):
        shutil.copyfile(os.path.join(args.fixture, name), os.path.join(args.output, name))
    write_text_atomic(os.path.join(args.output, "tokenizer_config.json"), json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    write_text_atomic(os.path.join(args.output, "README.md"), README)

    reloaded = load_safetensors(os.path.join(args.output, "model.safetensors"))
    if set(reloaded) != set(weights) or any(not np.array_equal(reloaded[k], weights[k]) for k in weights):
        raise BertError("the written safetensors file does not read back equal to the checkpoint")
    print(f"wrote {args.output} ({len(half)} tensors, FP16, lossless)")


if __name__ == "__main__":
    run_cli(main)
