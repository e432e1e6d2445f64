#!/usr/bin/env python3
"""End-to-end SQuAD throughput of this project's engine against the peer (bench/torch_baseline.py squad, the usual
Hugging Face recipe), on the same questions, in one run, with the same thread count; prints both and their ratio.

    python scripts/squad_benchmark.py --device cpu --limit 1000
    python scripts/squad_benchmark.py --device gpu            # whole dev set, FP16 engine

Both sides are timed from the parsed SQuAD file to the predictions (tokenization, inference and answer decoding
included; model loading excluded), and both are scored with the official SQuAD v1.1 metric.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402


def parse_args(argv):
    ap = StrictParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "minilm-l6-squad11"))
    ap.add_argument("--squad", default=os.path.join(ROOT, "squad", "dev-v1.1.json"))
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "fp16"), help="default: fp32 on CPU, fp16 on GPU")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (0: all)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="CPU cores both sides may use (the process and the peer's are pinned to that many)")
    ap.add_argument("--max-batch", type=int, default=64, help="windows packed per launch by our engine")
    ap.add_argument("--peer-batch", type=int, default=32)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--host-workers", type=int, default=None,
                    help="worker processes for our tokenization and decoding (default: the front end's choice)")
    ap.add_argument("--log-compiles", action="store_true",
                    help="print each Triton kernel compiled after the warm-up (kernel variants the warm-up missed)")
    ap.add_argument("--profile-engine", action="store_true",
                    help="print a cProfile of our timed pass's engine calls")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    for flag, value, low in (("--limit", args.limit, 0), ("--max-batch", args.max_batch, 1),
                             ("--peer-batch", args.peer_batch, 1), ("--host-workers", args.host_workers, 0)):
        if value is not None and value < low:
            raise BertError(f"{flag} must be at least {low}, got {value}")
    if not 1 <= args.threads <= cores:
        raise BertError(f"--threads must be between 1 and the {cores} cores this process may use, got {args.threads}")
    return args


def _last_line(text):
    """A failed child's last stderr line: its one-line error (or a traceback's last)."""
    return (text.strip().splitlines() or ["?"])[-1]


def run_ours(args, engine_path, examples):
    from helpers.qa_app import QuestionAnswerer, make_tokenizer
    from helpers.runtime import open_engine
    runner = open_engine(engine_path, args.device)
    qa_args = argparse.Namespace(sequence_length=384, doc_stride=128, max_query_length=64, n_best_size=20,
                                 max_answer_length=30, version_2_with_negative=False, null_score_diff_threshold=None)
    qa = QuestionAnswerer(runner, make_tokenizer(os.path.join(args.model_dir, "vocab.txt"), runner.engine_info),
                          qa_args, batch_size=args.max_batch, host_workers=args.host_workers)
    # warm-up, excluded like the peer's: Triton compiles each kernel variant on its first use in a process, and a
    # block's last launch can hold a window or two (the few-token kernels: a single question warms them)
    qa.answer_squad(examples[: min(len(examples), 8 * args.max_batch)])
    qa.answer_squad(examples[:1])
    if args.log_compiles:
        from triton import knobs
        knobs.runtime.jit_post_compile_hook = lambda **hook: print(f"compiled after the warm-up: {hook['repr']}",
                                                                   file=sys.stderr)
    qa.seconds = 0.0
    profiler = None
    if args.profile_engine:   # cProfile sees one thread: wrap the engine calls, whichever thread makes them
        import cProfile
        profiler, infer_packed = cProfile.Profile(), runner.infer_packed
        runner.infer_packed = lambda *a: profiler.runcall(infer_packed, *a)
    started = time.perf_counter()
    predictions = qa.answer_squad(examples)
    seconds = time.perf_counter() - started
    # where the time went: the engine calls (inputs in, logits out) of the timed pass, and a second pass (every
    # kernel variant compiled and every graph captured by then)
    details = {"engine_call_seconds": round(qa.seconds, 3)}
    if profiler is not None:
        import pstats
        runner.infer_packed = infer_packed
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    started = time.perf_counter()
    qa.answer_squad(examples)
    details["second_pass_seconds"] = round(time.perf_counter() - started, 3)
    details["host_workers"] = qa.host_workers
    qa.close()
    return predictions, seconds, details


def main(argv=None):
    args = parse_args(argv)
    # both sides on the same cores: our engine and host workers size themselves by the cores they may use, the
    # peer's process inherits the pinning, and BLAS pools are told the count
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    from helpers import data_processing as dp
    from helpers.squad_metrics import evaluate
    precision = args.precision or ("fp16" if args.device == "gpu" else "fp32")
    dataset = dp.load_squad_json(args.squad)   # read once: the examples, then the answers to score against
    examples = dp.squad_examples(dataset, args.squad)
    if args.limit:
        examples = examples[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        engine = os.path.join(tmp, "bench.engine")
        build = subprocess.run([sys.executable, os.path.join(ROOT, "builder_varseqlen.py"), "--backend", "native",
                                "-pt", args.model_dir, "-c", args.model_dir, "-o", engine, "-s", "384",
                                "-b", str(args.max_batch)] + (["--fp16"] if precision == "fp16" else []),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if build.returncode:
            raise BertError(f"building our engine failed: {_last_line(build.stderr)}")
        predictions, seconds, details = run_ours(args, engine, examples)
        ours = evaluate(dataset["data"], predictions, restrict_to=set(predictions))
        print(json.dumps(dict(stack=f"ours-{args.device}-{precision}", questions=len(examples),
                              seconds=round(seconds, 3), questions_per_s=round(len(examples) / seconds, 1), **ours,
                              **details)))
        if args.skip_peer:
            return
        peer_out = os.path.join(tmp, "peer.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "torch_baseline.py"), "squad", "--model-dir",
               args.model_dir, "--squad", args.squad, "--batch", str(args.peer_batch), "--out", peer_out]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise BertError(f"the peer failed: {_last_line(proc.stderr)}")
        peer_line = proc.stdout.strip()
        peer = json.loads(peer_line.splitlines()[-1])
        with open(peer_out, encoding="utf-8") as f:
            peer.update(evaluate(dataset["data"], json.load(f), restrict_to=set(predictions)))
        print(json.dumps(peer))
        ratio = (len(examples) / seconds) / peer["questions_per_s"]
        print(f"throughput ratio ours/peer: {ratio:.2f}x  (threads={args.threads}, device={args.device}, "
              f"questions={len(examples)})")


if __name__ == "__main__":
    run_cli(main)
