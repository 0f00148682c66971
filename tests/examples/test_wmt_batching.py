"""examples/wmt: token-budget batches on WMT-like sentence lengths.

Sentence lengths (in subword tokens) are drawn from a log-normal with mean
~27, as English-German WMT sentences; the German side is the English length
times a log-normal ratio. Every batch must stay within the token budget, and
the padding fraction is printed (run pytest with `-s` to see it).
"""

import argparse
import sys

import numpy as np
import tensorflow as tf

from tests.examples import EXAMPLES_DIR

sys.path.insert(0, str(EXAMPLES_DIR / "wmt"))
import wmt_common  # noqa: E402


class WordTokenizer:
    """One token per whitespace-separated word (ids 4..1003)."""

    @staticmethod
    def tokenize(strings):
        words = tf.strings.split(strings)
        return tf.ragged.map_flat_values(
            lambda w: tf.cast(tf.strings.to_hash_bucket_fast(w, 1000) + 4, tf.int32),
            words,
        )


def wmt_like_pairs(count, seed=0, mean=27.0, sigma=0.6):
    rng = np.random.default_rng(seed)
    mu = np.log(mean) - sigma**2 / 2  # mean of the log-normal = `mean`
    source = np.maximum(1, np.round(rng.lognormal(mu, sigma, count))).astype(int)
    ratio = rng.lognormal(0.05, 0.15, count)
    target = np.maximum(1, np.round(source * ratio)).astype(int)
    words = lambda n: " ".join(f"w{i % 50}" for i in range(n))
    return [(words(s), words(t)) for s, t in zip(source, target)], source, target


def test_batches_stay_within_the_token_budget():
    pairs, source, target = wmt_like_pairs(30000)
    args = argparse.Namespace(batch_tokens=25000, max_length=256)
    dataset = wmt_common.make_dataset(pairs, WordTokenizer(), args, training=False)
    report = wmt_common.batch_report(dataset)
    # The largest batch_size * padded length of either side of any batch.
    assert 0 < report["max_padded_tokens"] <= 25000
    print(
        f"\nWMT-like lengths (log-normal, mean {source.mean():.1f} source / "
        f"{target.mean():.1f} target tokens, {len(pairs)} pairs), full batches "
        "of --batch-tokens 25000: " + wmt_common.format_batch_report(report, 25000)
    )
    # Length buckets keep padding low (padding every batch to its longest
    # possible sentence, 256 tokens, would be ~90%).
    assert report["padding_source"] < 0.3 and report["padding_target"] < 0.3
    # Full batches carry most of the budget as real tokens.
    assert report["real_tokens_source"] > 0.6 * 25000
    assert report["real_tokens_target"] > 0.6 * 25000


def test_batches_split_evenly_across_replicas():
    pairs, _, _ = wmt_like_pairs(3000, seed=1)
    args = argparse.Namespace(batch_tokens=3000, max_length=128)
    dataset = wmt_common.make_dataset(
        pairs, WordTokenizer(), args, training=False, replicas=8
    )
    batches = 0
    for inputs, target_out in dataset:
        batch, source_length = inputs["source"].shape
        assert batch % 8 == 0 and batch > 0
        assert batch * source_length <= 3000 and batch * target_out.shape[1] <= 3000
        assert inputs["target"].shape == target_out.shape
        batches += 1
    assert batches > 5


def test_long_pairs_are_dropped():
    pairs = [("a " * 10, "b " * 10), ("a " * 40, "b " * 5), ("a " * 5, "b " * 40)]
    args = argparse.Namespace(batch_tokens=64, max_length=32)
    dataset = wmt_common.make_dataset(
        pairs, WordTokenizer(), args, training=False, drop_remainder=False
    )
    batches = list(dataset)
    assert sum(int(t.shape[0]) for _, t in batches) == 1
