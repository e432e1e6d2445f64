"""The question-answering front end shared by inference.py, inference_varseqlen.py and inference_c.py.

It turns passages and questions into feature windows, runs them through a runner (helpers/runtime.py) in batches
(fixed-length engines) or packed launches (variable-length engines), and decodes the n-best answers.
"""
import collections
import itertools
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from . import data_processing as dp
from .atomic import atomic_open, check_writable
from .errors import BertError, read_bytes, refuse_empty_paths, require_unicode
from .progress import progress_bar
from .tokenization import FullTokenizer


DEFAULT_PREDICTIONS = "./predictions.json"


def add_inference_args(parser, *, batch=True, doc_stride=True):
    """Upstream's inference flags (spec §2.3-2.5)."""
    parser.add_argument("-e", "--engine", help="Path to BERT engine")
    if batch:
        parser.add_argument("-b", "--batch-size", default=1, type=int,
                            help="Batch size for inference: feature windows run together per launch")
    parser.add_argument("-p", "--passage", nargs="*", help="Text for paragraph/passage for BERT QA")
    parser.add_argument("-pf", "--passage-file", help="File containing input passage")
    parser.add_argument("-q", "--question", nargs="*", help="Text for query/question for BERT QA")
    parser.add_argument("-qf", "--question-file", help="File containing input question")
    parser.add_argument("-sq", "--squad-json", help="SQuAD json file")
    parser.add_argument("-o", "--output-prediction-file", default=None,
                        help="Output prediction file for SQuAD evaluation (with -sq; default ./predictions.json)")
    parser.add_argument("-v", "--vocab-file", help="Path to file containing entire understandable vocab")
    parser.add_argument("-s", "--sequence-length", default=128, type=int, help="The sequence length to use")
    parser.add_argument("--max-query-length", default=64, type=int,
                        help="The maximum number of tokens for the question")
    parser.add_argument("--max-answer-length", default=30, type=int,
                        help="The maximum length of an answer that can be generated")
    parser.add_argument("--n-best-size", default=20, type=int,
                        help="Total number of n-best predictions to generate in the nbest_predictions.json file")
    if doc_stride:
        parser.add_argument("--doc-stride", default=128, type=int,
                            help="When splitting up a long document into chunks, what stride to take between chunks")
    parser.add_argument("--version-2-with-negative", action="store_true",
                        help="SQuAD v2: predict no answer when the null score wins (beyond upstream)")
    parser.add_argument("--null-score-diff-threshold", default=None, type=float,
                        help="SQuAD v2: predict no answer when null score - best score exceeds this (default 0)")


def parse_inference_args(parser, argv):
    """parse_args, refusing flag combinations that would leave a flag unused (upstream's if/elif silently used the
    first of -p, -pf, -sq and ignored the rest, and ignored -o outside SQuAD runs)."""
    args = parser.parse_args(argv)
    refuse_empty_paths((("-e", args.engine), ("-v", args.vocab_file), ("-pf", args.passage_file),
                        ("-qf", args.question_file), ("-sq", args.squad_json), ("-o", args.output_prediction_file)))
    # -p and -q given with no words are given (an empty passage or question, an error), not absent
    for words, path, flag in ((args.passage, args.passage_file, "-p"), (args.question, args.question_file, "-q")):
        if words is not None and path:
            raise BertError(f"{flag} and {flag}f both give the {'passage' if flag == '-p' else 'question'}: pass one")
    if args.squad_json:
        others = [flag for flag, given in (("-p", args.passage is not None), ("-pf", args.passage_file),
                                           ("-q", args.question is not None), ("-qf", args.question_file)) if given]
        if others:
            raise BertError(f"-sq answers every question of the SQuAD file: {', '.join(others)} cannot go with it")
        if args.output_prediction_file is None:
            args.output_prediction_file = DEFAULT_PREDICTIONS
    elif args.output_prediction_file is not None:
        raise BertError("-o names the predictions file of a SQuAD run: it needs -sq")
    return args


def read_text_arg(words, file_path, what):
    """Text from `-p/-q` words or a `-pf/-qf` file; None if neither was given."""
    if words is not None:
        return require_unicode(" ".join(words), f"the {what} (-{what[0]})", sys.getfilesystemencoding())
    if file_path:
        try:
            text = read_bytes(file_path, f"{what} file").decode("utf-8-sig")   # a byte-order mark is no text
        except UnicodeDecodeError:
            raise BertError(f"{what} file {file_path} is not UTF-8 text") from None
        return text.replace("\r\n", "\n").replace("\r", "\n")   # newlines as a text-mode read gives them
    return None


def require_text(text, what):
    if text is None or not text.strip():
        raise BertError(f"the {what} is empty")
    return text


VOCAB_PADDING_LIMIT = 1024


def make_tokenizer(vocab_file, engine_info):
    if not vocab_file:
        raise BertError("no vocabulary given: pass -v/--vocab-file (the model's vocab.txt)")
    # TensorRT engines carry no config, and a config may not say: then the vocabulary tells the case
    config = getattr(engine_info, "config", None)
    tokenizer = FullTokenizer(vocab_file, do_lower_case=None if config is None else config.do_lower_case)
    if config is not None:
        # The model's embedding table may be padded past its vocabulary to a multiple of 8 (DeepLearningExamples:
        # 30,528 rows for 30,522 tokens; Megatron: of 128 per tensor-parallel rank), never shorter, and never by a
        # thousand rows: anything else (a vocabulary missing a line, say) is another model's, whose ids would give
        # answers silently wrong.
        size = 1 + max(index for token, index in tokenizer.vocab.items() if token)   # ids a token can take
        padding = config.vocab_size - size
        if not (padding == 0 or (0 < padding < VOCAB_PADDING_LIMIT and config.vocab_size % 8 == 0)):
            raise BertError(f"vocabulary {vocab_file} has {size} tokens but the engine's model has "
                            f"{config.vocab_size}: it is not this model's vocabulary")
    return tokenizer


class QuestionAnswerer:
    """Runs feature windows through a runner and decodes answers; `seconds` and `features_run` accumulate the time
    spent in the engine (host-to-device copies included, decoding excluded), as upstream reports it."""

    def __init__(self, runner, tokenizer, args, batch_size=1, host_workers=None):
        self.runner, self.tokenizer = runner, tokenizer
        self.host_workers = default_host_workers(runner) if host_workers is None else host_workers
        self._workers = None
        info = runner.engine_info
        self.packed = bool(info.variable_seqlen)
        self.max_seq_length = args.sequence_length
        self.doc_stride = getattr(args, "doc_stride", 128)
        self.max_query_length = args.max_query_length
        self.n_best_size, self.max_answer_length = args.n_best_size, args.max_answer_length
        self.version_2 = args.version_2_with_negative
        if args.null_score_diff_threshold is not None and not self.version_2:
            raise BertError("--null-score-diff-threshold applies only with --version-2-with-negative")
        self.null_threshold = args.null_score_diff_threshold or 0.0
        if not np.isfinite(self.null_threshold):
            raise BertError("--null-score-diff-threshold must be a finite number")
        for name in ("n_best_size", "max_answer_length", "max_query_length", "doc_stride"):
            if getattr(self, name) < 1:   # inference_c.py has no --doc-stride: upstream's 128
                raise BertError(f"--{name.replace('_', '-')} must be at least 1")
        config = getattr(info, "config", None)
        if self.max_seq_length < 1:
            raise BertError("sequence length must be at least 1")
        if config is not None and self.max_seq_length > config.max_position_embeddings:
            raise BertError(f"sequence length {self.max_seq_length} exceeds the model's "
                            f"{config.max_position_embeddings} positions")
        if self.packed:
            if self.max_seq_length > info.max_seq:
                raise BertError(f"sequence length {self.max_seq_length} exceeds the engine's maximum {info.max_seq}")
            self.batch_size = max(batch_size, 1)
        else:
            if info.select_profile(batch_size, self.max_seq_length) is None:
                raise BertError(f"Could not find any profile that can run batch size {batch_size}. (sequence "
                                f"length {self.max_seq_length}; the engine's profiles cover "
                                + ", ".join(f"batch {p.batch[0]}-{p.batch[2]} x seq {p.seq[0]}-{p.seq[2]}"
                                            for p in info.profiles) + ")")
            self.batch_size = batch_size
        self.restart_timing()

    def restart_timing(self):
        """Start counting engine time afresh: each interactive question reports its own rate, as upstream."""
        self.seconds, self.features_run = 0.0, 0

    # ---- features -> logits -----------------------------------------------------------------------------------
    def run_features(self, features):
        """Logits for each feature: a list of NetworkOutput in the features' order. Packed launches take windows
        longest first, so windows of similar length share a launch."""
        outputs = [None] * len(features)
        order = list(range(len(features)))
        if self.packed:
            order.sort(key=lambda i: -_length(features[i]))
        for lo in range(0, len(order), self.batch_size):
            chunk = order[lo:lo + self.batch_size]
            for i, (start, end) in zip(chunk, self._run_chunk([features[i] for i in chunk])):
                outputs[i] = dp.NetworkOutput(start_logits=start, end_logits=end, feature_index=i)
        return outputs

    def _run_chunk(self, chunk):
        """(start, end) logits per window; packed runs return the window's real tokens only."""
        S = self.max_seq_length
        if self.packed:
            lengths = [_length(f) for f in chunk]
            ids = np.concatenate([f.input_ids[:n] for f, n in zip(chunk, lengths)]).astype(np.int32)
            segs = np.concatenate([f.segment_ids[:n] for f, n in zip(chunk, lengths)]).astype(np.int32)
            cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            t0 = time.perf_counter()
            out = self.runner.infer_packed(ids, segs, cu, max(lengths))
            self._count(t0, len(chunk))
            return [(out[0, lo:lo + n], out[1, lo:lo + n]) for n, lo in zip(lengths, cu[:-1])]
        rows = len(chunk)
        batch = rows
        info = self.runner.engine_info
        if info.select_profile(batch, S) is None:  # a static engine: fill the batch with copies of the last window
            batch = self.batch_size
        stack = lambda name: np.stack([getattr(f, name) for f in chunk] +  # noqa: E731
                                      [getattr(chunk[-1], name)] * (batch - rows)).astype(np.int32)
        t0 = time.perf_counter()
        out = self.runner.infer_fixed(stack("input_ids"), stack("segment_ids"), stack("input_mask"))
        self._count(t0, rows)
        return [(out[r, :, 0], out[r, :, 1]) for r in range(rows)]

    def _count(self, t0, n):
        self.seconds += time.perf_counter() - t0
        self.features_run += n

    @property
    def sentences_per_second(self):
        return self.features_run / self.seconds if self.seconds > 0 else float("inf")

    # ---- answers ----------------------------------------------------------------------------------------------
    def _decode_args(self):
        return dict(version_2_with_negative=self.version_2, null_score_diff_threshold=self.null_threshold,
                    do_lower_case=self.tokenizer.do_lower_case, word_pieces=self.tokenizer.word_pieces)

    def answer(self, doc_tokens, question):
        """(prediction text, n-best list) for one question about a passage; dp.QuestionError for an empty or
        tokenless question."""
        features = dp.convert_example_to_features(doc_tokens, question, self.tokenizer, self.max_seq_length,
                                                  self.doc_stride, self.max_query_length)
        prediction, nbest, _ = dp.get_predictions(doc_tokens, features, self.run_features(features),
                                                  self.n_best_size, self.max_answer_length, **self._decode_args())
        return prediction, nbest

    def answer_squad(self, examples, progress=False):
        """Predictions {id: text} for SQuAD examples, in file order.

        Host work and engine work overlap: with host worker processes (GPU runners on machines with cores to
        spare; squad_workers.py) the tokenization and decoding run there while this process runs the engine;
        otherwise blocks of questions are tokenized and decoded on this thread while a worker thread runs the
        engine on the previous block (the engines release the GIL while they compute)."""
        block_size = max(self.batch_size, 1) * 2
        with progress_bar(len(examples), "q", show=progress) as bar:
            if self.host_workers and len(examples) >= 2 * block_size:   # fewer: not worth starting processes
                return self._answer_with_workers(examples, block_size, bar)
            return self._answer_with_thread(examples, 2 * block_size, bar)

    def _answer_with_workers(self, examples, block_size, bar):
        from concurrent.futures.process import BrokenProcessPool
        workers = self._start_workers()
        blocks = [examples[lo:lo + block_size] for lo in range(0, len(examples), block_size)]
        try:
            encoding = [workers.encode(block) for block in blocks]
            decoding = []
            for block, encoded in zip(blocks, encoding):
                features = encoded.result()
                decoding.append(workers.decode(block, self.run_features([f for feats in features for f in feats])))
                decoding[-1].add_done_callback(lambda _, done=len(block): bar.update(done))   # live progress
            predictions = collections.OrderedDict()
            for block, answers in zip(blocks, decoding):
                predictions.update(zip((example.id for example in block), answers.result()))
            return predictions
        except BaseException as exc:
            self.close()
            if isinstance(exc, BrokenProcessPool):
                raise BertError(f"a host worker process died: {exc}") from None
            raise

    def _start_workers(self):
        if self._workers is None:
            from .squad_workers import HostWorkers
            self._workers = HostWorkers(self.host_workers, dict(
                tokenizer=self.tokenizer, max_seq_length=self.max_seq_length, doc_stride=self.doc_stride,
                max_query_length=self.max_query_length, n_best_size=self.n_best_size,
                max_answer_length=self.max_answer_length, decode_args=self._decode_args()))
        return self._workers

    def close(self):
        """Stop the host worker processes, if any were started."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def _answer_with_thread(self, examples, block_size, bar):
        from concurrent.futures import ThreadPoolExecutor
        switch_interval = sys.getswitchinterval()
        # The engine thread gives the GIL up at every copy and synchronization; with Python's default 5 ms switch
        # interval it then waits up to 5 ms for the tokenizing thread to hand it back, several times per launch.
        sys.setswitchinterval(min(switch_interval, 2e-4))
        per_example = dp.features_by_example(examples, self.tokenizer, self.max_seq_length, self.doc_stride,
                                             self.max_query_length)
        predictions = collections.OrderedDict()
        try:
            with ThreadPoolExecutor(1) as engine_thread:
                pending = None
                for lo in range(0, len(examples), block_size):
                    block = examples[lo:lo + block_size]
                    features = list(itertools.islice(per_example, len(block)))
                    flat = [f for feats in features for f in feats]
                    running = (block, features, engine_thread.submit(self.run_features, flat))
                    if pending is not None:
                        self._decode_block(*pending, predictions, bar)
                    pending = running
                if pending is not None:
                    self._decode_block(*pending, predictions, bar)
        finally:
            sys.setswitchinterval(switch_interval)
        return predictions

    def _decode_block(self, block, features, outputs_future, predictions, bar):
        answers = dp.best_answers(block, features, outputs_future.result(), self.n_best_size, self.max_answer_length,
                                  **self._decode_args())
        predictions.update(zip((example.id for example in block), answers))
        bar.update(len(block))


def default_host_workers(runner):
    """Worker processes for a SQuAD run's host work: none for CPU engines (they need the cores themselves), on
    small machines or where processes cannot be started by a fork server; otherwise up to 8, leaving two cores to
    this process."""
    if getattr(runner, "device", "cpu") != "gpu" or "forkserver" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores - 2) if cores >= 6 else 0


def _length(feature):
    return int(np.count_nonzero(feature.input_mask))


def print_answer(prediction, nbest, qa):
    print("------------------------")
    print(f"Running inference in {qa.sentences_per_second:.3f} Sentences/Sec")
    print("------------------------")
    print(f"Answer: '{prediction}'")
    # the printed answer's own n-best probability: with SQuAD v2's threshold it need not be the first entry (and
    # a non-null answer chosen past a null-filled n-best has none)
    probability = next((entry["probability"] for entry in nbest if entry["text"] == prediction), None)
    print(f"With probability: {'n/a' if probability is None else f'{100 * probability:.3f}'}")


def write_predictions(path, predictions):
    with atomic_open(path, "w") as f:
        f.write(json.dumps(predictions, indent=4))


def run_app(args, runner, batch_size=1):
    """inference.py's whole flow after argument parsing and engine loading."""
    tokenizer = make_tokenizer(args.vocab_file, runner.engine_info)
    qa = QuestionAnswerer(runner, tokenizer, args, batch_size=batch_size)
    passage = read_text_arg(args.passage, args.passage_file, "passage")
    if passage is None and args.squad_json:
        examples = dp.read_squad_json(args.squad_json)
        output = args.output_prediction_file
        check_writable(output, inputs=[("engine", args.engine), ("vocabulary", args.vocab_file),
                                       ("SQuAD json", args.squad_json), ("passage file", args.passage_file),
                                       ("question file", args.question_file)])  # fail before the work
        try:
            predictions = qa.answer_squad(examples, progress=True)
        finally:
            qa.close()
        write_predictions(output, predictions)
        print(f"Running inference in {qa.sentences_per_second:.3f} Sentences/Sec")
        print(f"\nOutput dump to {output}")
        return 0
    if passage is None:
        passage = _prompt("Paragraph: ")
    require_text(passage, "passage")
    doc_tokens = dp.convert_doc_tokens(passage)
    question = read_text_arg(args.question, args.question_file, "question")
    if question is not None:
        prediction, nbest = qa.answer(doc_tokens, require_text(question, "question"))
        print(f"\nPassage: {passage}")
        print(f"\nQuestion: {question}")
        print_answer(prediction, nbest, qa)
        return 0
    while True:
        question = _prompt("Question (to exit, type one of ['exit', 'quit']): ")
        if question is None or question.strip() in ("exit", "quit"):
            return 0
        qa.restart_timing()
        try:
            prediction, nbest = qa.answer(doc_tokens, question)
        except dp.QuestionError as exc:   # reported, and another question asked; any other failure ends the run
            print(f"error: {exc}", file=sys.stderr)
            continue
        print_answer(prediction, nbest, qa)


def _prompt(text):
    if sys.stdin is None:   # standard input closed (`<&-`): no input, as at its end
        print(text)
        return None
    try:
        return require_unicode(input(text), "standard input", sys.stdin.encoding)
    except EOFError:
        print()  # end the prompt's line
        return None
    except UnicodeDecodeError:
        raise BertError(f"standard input is not {sys.stdin.encoding} text: use a UTF-8 locale (or PYTHONUTF8=1)") \
            from None
