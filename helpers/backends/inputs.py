"""Input checks and packing shared by the native backends (runner contract: docs/DESIGN.md), and perf.py's
synthetic batch and timing loop, which the TensorRT runtime shares too."""
import time

import numpy as np

from ..errors import BertError


def sequence_lengths(input_mask):
    """Per row, the index of the first 0 in the mask (its length if none): upstream's mask semantics."""
    mask = np.asarray(input_mask) != 0
    return np.where(mask.all(1), mask.shape[1], np.argmin(mask, axis=1)).astype(np.int64)


def pack_fixed_inputs(input_ids, segment_ids, input_mask):
    """Padded (B, S) inputs -> packed ids, segment ids, cu_seqlens, the padded rows they came from, and (B, S)."""
    input_ids, segment_ids, input_mask = (np.asarray(a) for a in (input_ids, segment_ids, input_mask))
    if input_ids.ndim != 2 or input_ids.shape != segment_ids.shape or input_ids.shape != input_mask.shape:
        raise BertError(f"inputs must be three (batch, seq) arrays of one shape, got "
                        f"{input_ids.shape}, {segment_ids.shape}, {input_mask.shape}")
    B, S = input_ids.shape
    lengths = sequence_lengths(input_mask)
    if np.any(lengths == 0):
        raise BertError("a sequence has an empty mask (its first mask value is 0)")
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.concatenate([np.arange(n) + b * S for b, n in enumerate(lengths)]).astype(np.int64)
    return input_ids.reshape(-1)[rows], segment_ids.reshape(-1)[rows], cu, rows, (B, S)


def check_packed_inputs(config, ids, segs, cu):
    """Raise BertError unless packed inputs agree with each other and fit the model's vocabularies and positions."""
    if ids.shape != segs.shape:
        raise BertError(f"input_ids and segment_ids differ in length ({len(ids)} vs {len(segs)})")
    if len(cu) < 2 or cu[0] != 0 or cu[-1] != len(ids) or np.any(np.diff(cu) <= 0):
        raise BertError("cu_seqlens must start at 0, rise strictly and end at the token count")
    if np.diff(cu).max() > config.max_position_embeddings:
        raise BertError(f"a sequence of {np.diff(cu).max()} tokens exceeds the model's "
                        f"{config.max_position_embeddings} positions")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise BertError(f"token id out of range [0, {config.vocab_size})")
    if segs.min() < 0 or segs.max() >= config.type_vocab_size:
        raise BertError(f"segment id out of range [0, {config.type_vocab_size})")


def perf_inputs(batch_size, seq_len, seed, vocab_size, type_vocab_size):
    """perf.py's synthetic batch, as upstream makes it: uniform random token and segment ids from one seeded
    generator, flat (batch_size * seq_len,) int32; every sequence is full length (the mask is all ones)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab_size, size=batch_size * seq_len).astype(np.int32)
    segs = rng.randint(0, type_vocab_size, size=batch_size * seq_len).astype(np.int32)
    return ids, segs


def perf_loop(run, time_run, warmup, iterations, duration, progress=None, after_warmup=None):
    """perf.py's loop: `warmup` untimed run()s, then time_run()s (each returns its ms) until both `iterations` runs
    and `duration` seconds are reached; their times. progress() is called after every run of either kind (outside
    what time_run measures)."""
    tick = progress or (lambda: None)
    for _ in range(warmup):
        run()
        tick()
    if after_warmup is not None:
        after_warmup()
    times, started = [], time.perf_counter()
    while len(times) < iterations or time.perf_counter() - started < duration:
        times.append(time_run())
        tick()
    return times
