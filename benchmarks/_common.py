"""Configuration, data, FLOP counts and timing helpers shared by every system.

Only numpy and the standard library are imported here, so the TensorFlow and
PyTorch workers (each in its own subprocess) share the exact same batches.
"""

import json
import resource
import statistics
import time

import numpy as np

# Configuration "base-small" of issue 7.
CONFIG = {
    "name": "base-small",
    "vocabulary_size": 8192,
    "d_model": 256,
    "num_heads": 4,
    "d_ff": 1024,
    "num_layers": 3,  # encoder layers == decoder layers
    "dropout": 0.1,
    "batch_size": 32,
    "min_length": 20,
    "max_length": 64,
    "pad_id": 0,
    "bos_id": 2,
    "eos_id": 3,
    "first_word_id": 4,  # random tokens are drawn from [4, vocabulary_size)
    "seed": 1234,
    "learning_rate": 1e-4,
}

# Decoding benchmark: greedy (and beam 4) on an untrained model.
DECODE = {
    "batch_size": 16,
    "source_length": 48,
    "new_tokens": 64,
    "beam_size": 4,
    "seed": 4321,
}

RESULT_MARKER = "@@BENCH_RESULT@@"


def random_pairs(num_pairs, seed, config=CONFIG):
    """`num_pairs` seeded (source, target) int32 id arrays: each of a length
    uniform in `[min_length, max_length]`, random word ids, then EOS."""
    rng = np.random.default_rng(seed)
    low, high = config["min_length"], config["max_length"]
    pairs = []
    for _ in range(num_pairs):
        pair = []
        for length in rng.integers(low, high + 1, size=2):
            words = rng.integers(
                config["first_word_id"], config["vocabulary_size"], size=length - 1
            )
            pair.append(np.append(words, config["eos_id"]).astype(np.int32))
        pairs.append(tuple(pair))
    return pairs


def pad_batch(pairs, config=CONFIG):
    """Pairs padded to the batch maximum: a dict of int32 arrays `source`
    `(B, S)`, `target_in` `(B, T)` (BOS + target[:-1]) and `target_out`
    (the target, the labels)."""
    batch_size = len(pairs)
    source_len = max(len(s) for s, _ in pairs)
    target_len = max(len(t) for _, t in pairs)
    source = np.full((batch_size, source_len), config["pad_id"], np.int32)
    target_in = np.full((batch_size, target_len), config["pad_id"], np.int32)
    target_out = np.full((batch_size, target_len), config["pad_id"], np.int32)
    for row, (s, t) in enumerate(pairs):
        source[row, : len(s)] = s
        target_out[row, : len(t)] = t
        target_in[row, 0] = config["bos_id"]
        target_in[row, 1 : len(t)] = t[:-1]
    return {"source": source, "target_in": target_in, "target_out": target_out}


def training_batch(config=CONFIG):
    """The one seeded training batch every system trains on."""
    return pad_batch(random_pairs(config["batch_size"], config["seed"], config))


def corpus(num_batches, config=CONFIG):
    """The end-to-end corpus: `num_batches * batch_size` seeded pairs."""
    return random_pairs(num_batches * config["batch_size"], config["seed"] + 1, config)


def decode_source(decode=DECODE, config=CONFIG):
    """`(batch_size, source_length)` int32 source ids (no padding), EOS last."""
    rng = np.random.default_rng(decode["seed"])
    shape = (decode["batch_size"], decode["source_length"])
    ids = rng.integers(config["first_word_id"], config["vocabulary_size"], size=shape)
    ids[:, -1] = config["eos_id"]
    return ids.astype(np.int32)


def count_tokens(target_out, pad_id=0):
    """Non-pad target tokens (the labels that count in the loss)."""
    return int(np.count_nonzero(np.asarray(target_out) != pad_id))


# FLOP counts (matmul FLOPs only, 2 FLOPs per multiply-add).


def forward_flops(batch_size, source_len, target_len, config=CONFIG):
    """Forward matmul FLOPs of one padded batch, with a breakdown.

    Computed on the padded shapes (what every implementation multiplies;
    masked positions and causal upper triangles are computed, then masked).
    Embedding lookups, LayerNorm, softmax, biases and dropout are not counted.
    `config` may set `num_decoder_layers` (default `num_layers`); the lengths
    may be numpy arrays (one count per sentence pair).
    """
    d, f, n = config["d_model"], config["d_ff"], config["num_layers"]
    m = config.get("num_decoder_layers") or n
    b, s, t = batch_size, source_len, target_len
    parts = {
        "encoder_linear": n * 2 * b * s * (4 * d * d + 2 * d * f),
        "encoder_attention": n * 4 * b * s * s * d,  # Q K^T and P V
        # Self-attention Q, K, V, O, cross-attention Q, O and the FFN on the
        # target; cross-attention K, V on the encoder output.
        "decoder_linear": m * 2 * b * (t * (6 * d * d + 2 * d * f) + s * 2 * d * d),
        "decoder_attention": m * 4 * b * t * (t + s) * d,
        "output_projection": 2 * b * t * d * config["vocabulary_size"],
    }
    parts["total"] = sum(parts.values())
    return parts


def train_flops(batch_size, source_len, target_len, config=CONFIG):
    """Training FLOPs of one step: 3 x forward (backward = 2 x forward)."""
    return 3 * forward_flops(batch_size, source_len, target_len, config)["total"]


# Timing and reporting.


def peak_rss_mib():
    """Peak resident set size of this process so far (Linux: KiB -> MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarize(times):
    """Median, mean, min and max of a list of seconds."""
    return {
        "n": len(times),
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def time_calls(fn, repeats):
    """Wall seconds of `repeats` calls of `fn` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def emit(result):
    """Prints a result line the parent (`compare.py`) picks up."""
    print(RESULT_MARKER + json.dumps(result), flush=True)
