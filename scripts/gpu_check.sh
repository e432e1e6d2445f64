#!/usr/bin/env bash
# One GPU machine session's checks and measurements, in the order that matters (each step's log in $OUT or
# results/gpu_check/): infer_c build, the whole test suite, latency against the peer (each in its own process, and
# at the full batch in alternating rounds), SQuAD end to end against the peer with the host worker processes and
# with the threaded pipeline. About 9 minutes on an H200.
#   bash scripts/gpu_check.sh            # everything
#   bash scripts/gpu_check.sh squad      # only the steps named: build tests latency squad
# Tests that need data the repo does not ship (the fixture's TF checkpoint and reference outputs, SQuAD v2 dev)
# skip unless $BERT_SHARED_DATA names a folder that holds it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu_check}
mkdir -p "$out"
steps=${*:-build tests latency squad}
export PYTHONUNBUFFERED=1
for step in $steps; do
  echo "== $step"
  case $step in
    build)   { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j; } > "$out/build.log" 2>&1 \
               || tail -20 "$out/build.log" ;;
    tests)   python3 -m pytest tests -q -x 2>&1 | tee "$out/tests.log" | tail -4 ;;
    latency) python3 scripts/gpu_bench.py --phases latency --models base,large --shapes 1x128,1x384,128x384 \
               --variants auto/erf,auto/tanh --out "$out" > "$out/latency.log" 2>&1; tail -9 "$out/latency.log"
             # the full batch again with ours and the peer each in a process that stays up, alternating (same
             # thermal state); not b1, where living beside another GPU process speeds up the peer (PERF_NOTES s13)
             python3 scripts/gpu_bench.py --phases compare --models base,large --shapes 128x384 \
               --out "$out/compare" > "$out/compare.log" 2>&1; tail -9 "$out/compare.log" ;;
    squad)   python3 scripts/squad_benchmark.py --device gpu --max-batch 128 --peer-batch 256 --log-compiles 2>&1 \
               | tee "$out/squad.log" | tail -6
             python3 scripts/squad_benchmark.py --device gpu --max-batch 128 --host-workers 0 --skip-peer 2>&1 \
               | tee "$out/squad_threaded.log" | tail -1 ;;
    *)       echo "unknown step $step (build tests latency squad)"; exit 2 ;;
  esac
done
