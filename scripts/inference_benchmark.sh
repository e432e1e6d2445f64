#!/usr/bin/env bash
# upstream's inference_benchmark.sh, offline: BERT-Base and BERT-Large engines built from random-weight TF
# checkpoints (scripts/make_random_checkpoint.py; the fine-tuned NGC checkpoints cannot be downloaded here), timed
# with perf.py (or build/perf --enable_graph for TensorRT engines), then upstream's README latency tables plus the
# peer (bench/torch_baseline.py latency: Hugging Face BERT, FP16, SDPA, CUDA graph) measured in the same run and
# the ratio of our FP16 average to the peer's median.
#
#   scripts/inference_benchmark.sh [--gpu Volta|Xavier|Turing|Ampere|Hopper]
#
# Beyond upstream, these environment variables narrow the matrix (defaults: upstream's whole matrix):
#   BENCH_MODELS="base large"  BENCH_PRECISIONS="int8-qat int8 fp16 fp32"  BENCH_SEQS="128 384"
#   BENCH_BATCHES="1 2 4 8 12 16 24 32 64 128"  BENCH_ITERATIONS (default: 2000 on Ampere, else 1000)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 [--gpu Volta|Xavier|Turing|Ampere|Hopper]"
    echo "  narrow the matrix with BENCH_MODELS, BENCH_PRECISIONS, BENCH_SEQS, BENCH_BATCHES, BENCH_ITERATIONS"
    echo "  (see the comments at the top of this script); without a CUDA GPU the native engines run on the CPU"
}
arch=Volta
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) [ $# -ge 2 ] || { echo "error: --gpu needs a value (Volta, Xavier, Turing, Ampere, Hopper)" >&2; exit 2; }; arch="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (usage: $0 [--gpu ARCH]; --help)" >&2; exit 2 ;;
    esac
done
case "$arch" in
    Volta|Xavier|Turing|Ampere|Hopper) ;;
    *) echo "error: --gpu must be one of Volta, Xavier, Turing, Ampere, Hopper (got $arch)" >&2; exit 2 ;;
esac

# unset: the whole matrix; set, even to nothing, is what the user asked for (an empty list is an error below)
MODELS=${BENCH_MODELS-"base large"}
PRECISIONS=${BENCH_PRECISIONS-"int8-qat int8 fp16 fp32"}
SEQS=${BENCH_SEQS-"128 384"}
BATCHES=${BENCH_BATCHES-"1 2 4 8 12 16 24 32 64 128"}
if [ "$arch" = Ampere ]; then default_iterations=2000; else default_iterations=1000; fi
ITERATIONS=${BENCH_ITERATIONS-$default_iterations}
PY=${PYTHON:-python3}
# every value checked before any work (a bad one found late cost a checkpoint and engines first)
for var in MODELS PRECISIONS SEQS BATCHES ITERATIONS; do
    [ -n "$(echo ${!var})" ] || { echo "error: BENCH_$var is empty" >&2; exit 2; }
done
for model in $MODELS; do
    case "$model" in base|large) ;; *) echo "error: BENCH_MODELS: unknown model $model (base, large)" >&2; exit 2 ;; esac
done
for prec in $PRECISIONS; do
    case "$prec" in
        int8-qat|int8|fp16|fp32) ;;
        *) echo "error: BENCH_PRECISIONS: unknown precision $prec (int8-qat, int8, fp16, fp32)" >&2; exit 2 ;;
    esac
done
for var in SEQS BATCHES ITERATIONS; do
    for value in ${!var}; do
        case "$value" in
            ''|*[!0-9]*|0*) echo "error: BENCH_$var: $value is not a positive whole number" >&2; exit 2 ;;
        esac
    done
done
[ "$(echo $ITERATIONS | wc -w)" = 1 ] || { echo "error: BENCH_ITERATIONS takes one number" >&2; exit 2; }

command -v nvidia-smi >/dev/null && nvidia-smi -q || echo "(nvidia-smi not available)"
have_gpu=0
$PY -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && have_gpu=1
where=$arch   # what the headers, the table and the results file name: the GPU, or the CPU the engines ran on
if [ $have_gpu = 0 ]; then
    where=CPU
    echo "No CUDA GPU: native engines run on the CPU (perf.py times wall clock), and no peer is timed"
fi
mkdir -p engines results
results=results/inference_benchmark_${where}.tsv
rows=$(mktemp "results/.inference_benchmark_${where}.XXXXXX")   # replaces $results only when the run completes
trap 'rm -f "$rows"' EXIT
have_trt=0
$PY -c "import tensorrt" 2>/dev/null && have_trt=1

for model in $MODELS; do
    for prec in $PRECISIONS; do
        for seq in $SEQS; do
            header="==== Benchmarking BERT ${model} ${prec} SEQLEN ${seq} on ${where} ===="
            if [ "$prec" = int8-qat ] && [ "$model" != large ]; then
                continue   # upstream's matrix has INT8 QAT for BERT-Large only
            fi
            if [ "${prec#int8}" != "$prec" ] && [ $have_trt = 0 ]; then
                echo "$header"
                echo "Skipping: ${prec} engines need TensorRT, which is not installed"; continue
            fi
            if [ "$prec" = int8-qat ]; then
                echo "$header"
                echo "Skipping: the QAT ONNX checkpoint cannot be downloaded offline"; continue
            fi
            ckpt=models/fine-tuned/bert_tf_ckpt_${model}_qa_squad2_amp_${seq}_v19.03.1
            if [ ! -f "$ckpt/model.ckpt.index" ]; then
                # one random checkpoint serves every sequence length (upstream's fine-tuned ones differ per length)
                random_ckpt=models/fine-tuned/random_bert_tf_ckpt_${model}
                if [ ! -f "$random_ckpt/model.ckpt.index" ]; then
                    $PY scripts/make_random_checkpoint.py --size "$model" -o "$random_ckpt"
                fi
                if [ -L "$ckpt" ]; then rm "$ckpt"       # a link whose checkpoint was deleted, now made again
                elif [ -e "$ckpt" ]; then rmdir "$ckpt"; fi   # an empty folder left by an interrupted run
                ln -s "$(basename "$random_ckpt")" "$ckpt"
            fi
            flags=()
            case "$prec" in
                fp16) flags=(--fp16) ;;
                int8) flags=(--int8 --fp16 --strict --calib-num 1)
                      case "$arch" in
                          Ampere|Turing|Hopper) flags+=(-iln -imh) ;;
                          Xavier) flags+=(-iln) ;;
                      esac ;;
            esac   # fp32: no precision flag (upstream passes --fp32, which its builder ignores)
            for batch in $BATCHES; do
                echo "$header"   # upstream prints it for every engine it builds and times
                engine=engines/bert_${model}_${prec}_bs${batch}_seqlen${seq}_benchmark.engine
                if [ ! -f "$engine" ]; then
                    # --numerics demobert: native engines compute what upstream's TensorRT plugins do (tanh GELU)
                    $PY builder.py -tcf build.tcf -o "$engine" -b "$batch" -s "$seq" -c "$ckpt" \
                        -m "$ckpt/model.ckpt" -v "$ckpt/vocab.txt" --numerics demobert ${flags[@]+"${flags[@]}"}
                fi
                if [ -x build/perf ] && [ $have_trt = 1 ]; then
                    out=$(build/perf -b "$batch" -s "$seq" -e "$engine" -w 100 -i "$ITERATIONS" --enable_graph)
                else
                    out=$($PY perf.py -b "$batch" -s "$seq" -e "$engine" -w 100 -i "$ITERATIONS")
                fi
                echo "$out"
                # "Average Time: A ms  95th Percentile Time: P ms  99th Percentile Time: Q [ms]"
                echo "$out" | $PY -c '
import re, sys
text = sys.stdin.read()
num = lambda label: re.search(label + r" Time: ([0-9.eE+-]+)", text).group(1)
print("\t".join(sys.argv[1:] + [num("Average"), num("95th Percentile"), num("99th Percentile")]))
' ours "$model" "$prec" "$seq" "$batch" >> "$rows"
            done
        done
    done
    if [ "${PRECISIONS/fp16/}" != "$PRECISIONS" ] && [ $have_gpu = 1 ]; then
        shapes=()
        for seq in $SEQS; do for batch in $BATCHES; do shapes+=(--shape "${batch}x${seq}"); done; done
        $PY bench/torch_baseline.py latency --model "$model" "${shapes[@]}" | $PY -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        print("\t".join(["peer", r["model"], "fp16", str(r["seq"]), str(r["batch"]), str(r["median_ms"]), str(r["p95_ms"]), ""]))
' >> "$rows"
    fi
done
if [ ! -s "$rows" ]; then   # nothing could run here (every line above says why): keep the previous results
    echo "error: no configuration of the matrix could run here; $results is left as it was" >&2
    exit 1
fi
chmod 644 "$rows" && mv "$rows" "$results"

$PY - "$results" "$where" <<'EOF'
import sys
from collections import defaultdict

path, arch = sys.argv[1], sys.argv[2]
ours, peer = defaultdict(dict), {}
for line in open(path):
    kind, model, prec, seq, batch, avg, p95, p99 = line.rstrip("\n").split("\t")
    key = (model, int(seq), int(batch))
    if kind == "ours":
        ours[key][prec] = (float(p95), float(p99), float(avg))
    else:
        peer[key] = float(avg)
precisions = [p for p in ("int8-qat", "int8", "fp16", "fp32") if any(p in v for v in ours.values())]
for model in sorted({k[0] for k in ours}):
    print(f"\n##### BERT {model} ({arch}; peer: Hugging Face FP16 + SDPA + CUDA graph, median, same run)")
    head = "| Sequence Length | Batch Size |" + "".join(f" {p.upper()} Latency (ms) | | |" for p in precisions)
    print(head + " Peer FP16 (ms) | FP16 / peer |")
    print("|" + "---|" * (2 + 3 * len(precisions) + 2))
    print("| | |" + " 95th Percentile | 99th Percentile | Average |" * len(precisions) + " | |")
    for key in sorted(k for k in ours if k[0] == model):
        row = f"| {key[1]} | {key[2]} |"
        for p in precisions:
            row += "".join(f" {v:.2f} |" for v in ours[key][p]) if p in ours[key] else " | | |"
        fp16, other = ours[key].get("fp16"), peer.get(key)
        row += f" {other:.2f} |" if other else " |"
        row += f" {fp16[2] / other:.2f} |" if fp16 and other else " |"
        print(row)
EOF
