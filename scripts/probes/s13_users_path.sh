#!/usr/bin/env bash
# Session 13 probe: Large b1 timed the users' way, one process per run, perf.py and the peer's script alternating
# (A B A B), then both again while an idle process holds a CUDA context on the GPU (call 2 found the peer's b1
# 8% faster in gpu_bench's compare phase, where our idle serving process sits beside it).
set -uo pipefail
cd "$(dirname "$0")/../.."
ck=/tmp/s13ck; eng=/tmp/s13_large_b1.engine
t0=$SECONDS
python3 scripts/make_random_checkpoint.py --size large -o $ck > /dev/null
python3 builder.py -o $eng -b 1 -s 128 -s 384 -m $ck/model.ckpt -c $ck -v $ck/vocab.txt --fp16 --numerics demobert > /tmp/build.log 2>&1 || tail -5 /tmp/build.log
echo "checkpoint + engine: $((SECONDS - t0)) s"
ours() { python3 perf.py -e $eng -b 1 -s $1 -w 100 -i 500 2>&1 | grep -o "Average Time: [0-9.]* ms" | tr '\n' ' '; }
peer() { python3 bench/torch_baseline.py latency --model large --shape 1x$1 --iters 500 | grep -o '"median_ms": [0-9.]*'; }
for s in 384 128; do
  for round in 1 2; do echo "s$s round $round: ours $(ours $s) | peer $(peer $s)"; done
done
python3 -c "import torch, time; torch.zeros(1, device='cuda'); print('holder up', flush=True); time.sleep(300)" &
holder=$!; sleep 8
for s in 384 128; do echo "s$s, idle context beside: ours $(ours $s) | peer $(peer $s)"; done
kill $holder
echo "s384 holder gone: ours $(ours 384) | peer $(peer 384)"
echo "total $((SECONDS - t0)) s"
