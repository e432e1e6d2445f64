"""perf.py and perf_varseqlen.py: upstream's flags and report lines, with upstream's averaging bug fixed
(each batch size's statistics use its own iteration count)."""
import math

from .errors import BertError, StrictParser
from .progress import progress_bar
from .runtime import DEVICES, open_engine


def parse_args(argv):
    parser = StrictParser(description="BERT Inference Benchmark")
    parser.add_argument("-e", "--engine", help="Path to BERT TensorRT engine")
    parser.add_argument("-b", "--batch-size", default=[], action="append", type=int,
                        help="Batch size(s) to benchmark. Can be specified multiple times for more than one batch "
                             "size. This script assumes that the engine has been built with one optimization "
                             "profile for each batch size, and that these profiles are in order of increasing "
                             "batch size.")
    parser.add_argument("-s", "--sequence-length", default=128, type=int,
                        help="Sequence length of the BERT model")
    parser.add_argument("-i", "--iterations", default=200, type=int,
                        help="Number of iterations to run when benchmarking each batch size.")
    parser.add_argument("-w", "--warm-up-runs", default=10, type=int,
                        help="Number of iterations to run prior to benchmarking.")
    parser.add_argument("-d", "--duration", default=0.0, type=float,
                        help="Minimal number of seconds to run when benchmarking each batch size.")
    parser.add_argument("-r", "--random-seed", default=12345, type=int,
                        help="Random seed.")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where a native engine runs (beyond upstream): auto = GPU if usable, else CPU")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or [1]
    if not args.engine:
        raise BertError("no engine given: pass -e/--engine")
    if args.iterations < 0 or args.warm_up_runs < 0 or not 0 <= args.duration < math.inf:
        raise BertError("iterations and warm-up runs must be >= 0 and duration a finite number of seconds >= 0")
    if args.iterations == 0 and args.duration == 0:   # upstream runs while either is unmet: nothing to time
        raise BertError("nothing to time: give -i/--iterations >= 1 or -d/--duration > 0")
    if not 0 <= args.random_seed < 2 ** 32:
        raise BertError(f"-r/--random-seed must be in [0, 2**32), got {args.random_seed}")
    args.batch_size = sorted(set(args.batch_size))   # upstream reported from a dict keyed by batch size
    return args


def percentile(sorted_times, fraction):
    return sorted_times[min(int(len(sorted_times) * fraction), len(sorted_times) - 1)]


def report(batch_size, times):
    n = len(times)
    ordered = sorted(times)
    total = sum(times)
    print(f"Running {n} iterations with Batch Size: {batch_size}\n\tTotal Time: {total} ms \tAverage Time: "
          f"{total / n} ms\t95th Percentile Time: {percentile(ordered, 0.95)} ms\t99th Percentile Time: "
          f"{percentile(ordered, 0.99)}", flush=True)


def run_perf(argv, variable_seqlen):
    args = parse_args(argv)
    runner = open_engine(args.engine, args.device)
    info = runner.engine_info
    script = "perf_varseqlen.py" if variable_seqlen else "perf.py"
    if bool(info.variable_seqlen) != variable_seqlen:
        other = "perf_varseqlen.py" if info.variable_seqlen else "perf.py"
        raise BertError(f"{args.engine} was built by {'builder_varseqlen.py' if info.variable_seqlen else 'builder.py'}"
                        f": benchmark it with {other}, not {script}")
    for batch_size in args.batch_size:
        if batch_size < 1:
            raise BertError("batch size must be at least 1")
        if info.select_profile(batch_size, args.sequence_length) is None:
            raise BertError(f"None of the dynamic shape profiles meets the requirement batch = {batch_size} and "
                            f"sequence = {args.sequence_length}.")
    for batch_size in args.batch_size:
        # a known count of runs, or an open one while -d's seconds decide
        runs = args.warm_up_runs + args.iterations if args.duration == 0 else None
        with progress_bar(runs, "run", f"batch {batch_size}") as bar:
            times = runner.benchmark(batch_size, args.sequence_length, args.warm_up_runs, args.iterations,
                                     args.duration, args.random_seed, progress=bar.update)
        report(batch_size, times)
    return 0
