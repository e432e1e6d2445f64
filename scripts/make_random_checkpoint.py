#!/usr/bin/env python3
"""Make a random-weight BERT-Base or BERT-Large question-answering checkpoint for benchmarks.

    python scripts/make_random_checkpoint.py --size large -o models/random-large [--seed 0]

Writes OUT/model.ckpt.{index,data-00000-of-00001} (TensorFlow V2 format, Google BERT / run_squad.py variable names,
float32, made without TensorFlow), OUT/checkpoint, OUT/bert_config.json and OUT/vocab.txt -- the layout builder.py's
`-m OUT/model.ckpt -c OUT` expects. The answers are meaningless; speed is the same as a trained model's.
OUT is new, empty or an earlier output of this script (a folder holding other files, such as a real model's, is
refused); the files are written into a folder beside it, which then takes its place.
"""
import json
import os
import re
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.tf_checkpoint import write_checkpoint  # noqa: E402

SIZES = {  # Google's BERT-Base and BERT-Large (uncased) shapes
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
}
COMMON = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
          "initializer_range": 0.02, "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": 30522}
VOCAB = os.path.join(ROOT, "models", "minilm-l6-squad11", "vocab.txt")  # Google's bert-base-uncased vocabulary
OUR_FILES = re.compile(r"model\.ckpt\.(index|data-\d{5}-of-\d{5})|checkpoint|bert_config\.json|vocab\.txt")


def random_tf_variables(config, seed):
    """{TF variable name: array} of a BERT QA model: normal(0, 0.02) matrices, zero biases, unit LayerNorm gains."""
    rng = np.random.default_rng(seed)
    e, i = config["hidden_size"], config["intermediate_size"]

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(config["initializer_range"]))

    def layer_norm(prefix):
        return {f"{prefix}/LayerNorm/gamma": np.ones(e, np.float32),
                f"{prefix}/LayerNorm/beta": np.zeros(e, np.float32)}

    def dense(prefix, n_in, n_out):  # TF kernels are [in, out]
        return {f"{prefix}/kernel": normal(n_in, n_out), f"{prefix}/bias": np.zeros(n_out, np.float32)}

    variables = {"bert/embeddings/word_embeddings": normal(config["vocab_size"], e),
                 "bert/embeddings/position_embeddings": normal(config["max_position_embeddings"], e),
                 "bert/embeddings/token_type_embeddings": normal(config["type_vocab_size"], e),
                 "cls/squad/output_weights": normal(2, e), "cls/squad/output_bias": np.zeros(2, np.float32),
                 **layer_norm("bert/embeddings")}
    for n in range(config["num_hidden_layers"]):
        prefix = f"bert/encoder/layer_{n}"
        for part in ("query", "key", "value"):
            variables.update(dense(f"{prefix}/attention/self/{part}", e, e))
        variables.update(dense(f"{prefix}/attention/output/dense", e, e))
        variables.update(layer_norm(f"{prefix}/attention/output"))
        variables.update(dense(f"{prefix}/intermediate/dense", e, i))
        variables.update(dense(f"{prefix}/output/dense", i, e))
        variables.update(layer_norm(f"{prefix}/output"))
    return variables


def main(argv=None):
    parser = StrictParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", required=True, choices=sorted(SIZES), help="BERT-Base or BERT-Large shapes")
    parser.add_argument("-o", "--output", required=True, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise BertError("--seed must be >= 0")
    if not os.path.isfile(VOCAB):
        raise BertError(f"vocabulary not found: {VOCAB}")
    # through a link to a folder: the folder it names is the one replaced
    output = os.path.realpath(args.output) if args.output else ""
    if not output:
        raise BertError("output folder is empty: pass -o FOLDER")
    if os.path.lexists(output):
        if not os.path.isdir(output):
            raise BertError(f"output {args.output} is not a folder")
        others = sorted(name for name in os.listdir(output) if not OUR_FILES.fullmatch(name))
        if others:
            raise BertError(f"output folder {args.output} holds other files ({', '.join(others[:5])}): "
                            "choose a new or empty folder")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    config = {**COMMON, **SIZES[args.size]}
    # the folder's rename is what makes the output appear whole, so the files in it are written plainly
    staging = os.path.join(parent, f".{os.path.basename(output)}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)   # a crashed run's with the same process id
    os.mkdir(staging)
    try:
        write_checkpoint(os.path.join(staging, "model.ckpt"), random_tf_variables(config, args.seed))
        for name, text in (("checkpoint", 'model_checkpoint_path: "model.ckpt"\n'
                                          'all_model_checkpoint_paths: "model.ckpt"\n'),
                           ("bert_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")):
            with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                f.write(text)
        shutil.copyfile(VOCAB, os.path.join(staging, "vocab.txt"))
        if os.path.isdir(output):   # an earlier output of this script (checked above): replaced whole
            shutil.rmtree(output)
        os.rename(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote random BERT-{args.size.capitalize()} checkpoint to {os.path.join(args.output, 'model.ckpt')}")


if __name__ == "__main__":
    run_cli(main)
