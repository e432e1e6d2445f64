"""The host work of a SQuAD run (WordPiece windows, answer decoding) in worker processes.

On a GPU the engine answers the dev set's 10,570 questions in well under a second, while the Python tokenization
and n-best decoding around it take seconds on one core (docs/PERF_NOTES.md, run 8). Blocks of questions are
independent, so workers turn each block into windows, the main process runs the engine over them, and a worker
decodes the block's answers from the logits. The decoding worker derives the block's windows again rather than
receiving them: recomputing is cheaper than pickling token lists and maps both ways. Only the windows' id, mask and
segment arrays and the logits cross process boundaries.

Workers are started by a fork server (never forked from the engine's process, which holds CUDA state and threads),
once per QuestionAnswerer, and get the tokenizer and the decoding settings once, at start.
"""
import concurrent.futures
import multiprocessing

from . import data_processing as dp

_SETTINGS = {}   # in each worker: tokenizer, window and decoding settings


def _init_worker(settings):
    _SETTINGS.update(settings)


def _features(examples):
    s = _SETTINGS
    return dp.features_by_example(examples, s["tokenizer"], s["max_seq_length"], s["doc_stride"],
                                  s["max_query_length"])


def encode_block(examples):
    """Each example's windows, as Features holding only what an engine reads."""
    return [[dp.Feature(f.input_ids, f.input_mask, f.segment_ids, None, None, None) for f in features]
            for features in _features(examples)]


def decode_block(examples, outputs):
    """Each example's best answer text, from the NetworkOutputs of its windows (all examples' windows, in order)."""
    s = _SETTINGS
    return dp.best_answers(examples, list(_features(examples)), outputs, s["n_best_size"], s["max_answer_length"],
                           **s["decode_args"])


class HostWorkers:
    """A pool of `count` worker processes for encode_block / decode_block."""

    def __init__(self, count, settings):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])   # workers start with numpy and this package imported
        self._pool = concurrent.futures.ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker,
                                                            initargs=(settings,))

    def encode(self, examples):
        return self._pool.submit(encode_block, examples)

    def decode(self, examples, outputs):
        return self._pool.submit(decode_block, examples, outputs)

    def close(self):
        self._pool.shutdown(cancel_futures=True)
