#!/usr/bin/env bash
# Quick start: a virtual environment in .venv/, an engine from the embedded model, and upstream's README question.
set -euo pipefail
cd "$(dirname "$0")/.."
# a venv left without pip (an interrupted first run) is made again
.venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv && python3 -m venv .venv; }
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
MODEL=models/minilm-l6-squad11
mkdir -p engines
.venv/bin/python builder.py -pt "$MODEL" -c "$MODEL" -o engines/minilm_fp32_b1_s384.engine -b 1 -s 384
.venv/bin/python inference.py -e engines/minilm_fp32_b1_s384.engine -s 384 -v "$MODEL/vocab.txt" \
    -p "TensorRT is a high performance deep learning inference platform that delivers low latency and high throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to import models, and plugins to support novel ops and layers before applying optimizations for inference. Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can customize and extend these components to take advantage of powerful TensorRT optimizations for your apps." \
    -q "What is TensorRT?"
