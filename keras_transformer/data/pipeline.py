"""tf.data training pipelines: tokenize, filter, bucket, batch, teacher-force."""

import tensorflow as tf

from keras_transformer.data.corpus import as_corpus
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

DEFAULT_BOUNDARIES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_lengths(max_length, boundaries=None):
    """The padded lengths of the buckets up to `max_length` (ascending)."""
    boundaries = sorted(set(boundaries or DEFAULT_BOUNDARIES))
    lengths = [b for b in boundaries if b < max_length] + [max_length]
    return lengths


def make_dataset(
    pairs,
    source_tokenize,
    target_tokenize,
    batch_size=None,
    batch_tokens=None,
    max_source_length=128,
    max_target_length=128,
    bucket_boundaries=None,
    shuffle=True,
    shuffle_buffer=100_000,
    seed=None,
    repeat=False,
    drop_remainder=True,
    tokenize_batch=512,
):
    """A `tf.data` pipeline of padded, length-bucketed translation batches.

    Steps: shuffle the string pairs; tokenize them in the graph (in batches
    of `tokenize_batch`); append EOS to the source; make the teacher-forcing
    pair `target_in = BOS + y`, `target_out = y + EOS`; drop pairs longer
    than the limits (BOS/EOS counted); group by length into buckets and pad
    every batch to its bucket's length, so only a few static shapes occur
    (`drop_remainder=True` also fixes the batch dimension: the same pipeline
    runs on TPUs and under XLA).

    Buckets are pairs of padded lengths `(L_source, L_target)` taken from
    `bucket_boundaries`: a pair goes to the smallest lengths that fit each
    side, so a short German compound is not padded to its long English
    source. With `batch_tokens`, a bucket's batch holds
    `batch_tokens // max(L_source, L_target)` sentences, so no batch has more
    than `batch_tokens` (padded) tokens per side, like the paper's
    ~25,000-token batches; with `batch_size`, a fixed number.

    Args:
        pairs: a `ParallelCorpus`, a list of string pairs or a
            `tf.data.Dataset` of `(source, target)` strings.
        source_tokenize: `tf.string [N] -> tf.RaggedTensor int [N, None]`,
            e.g. `SubwordTokenizer.tokenize`.
        target_tokenize: same, for the target side.
        batch_size: sentences per batch (one of `batch_size`/`batch_tokens`).
        batch_tokens: padded tokens per side per batch.
        max_source_length: longest source kept, EOS included.
        max_target_length: longest target kept, BOS/EOS included.
        bucket_boundaries: padded lengths of the buckets; default
            `8, 12, 16, 24, 32, 48, 64, ...` up to the longest allowed length.
        shuffle: bool. shuffle_buffer: int. seed: int or `None`.
        repeat: bool, repeat forever (use with `steps_per_epoch`).
        drop_remainder: bool, drop each bucket's last partial batch.
        tokenize_batch: int.

    Returns:
        A dataset of `({"source": int32 [B, L], "target": int32 [B, L]},
        target_out int32 [B, L])`, padded with 0.
    """
    if (batch_size is None) == (batch_tokens is None):
        raise ValueError(
            "Pass exactly one of `batch_size` and `batch_tokens`. Received: "
            f"batch_size={batch_size}, batch_tokens={batch_tokens}"
        )
    max_length = max(max_source_length, max_target_length)
    lengths = bucket_lengths(max_length, bucket_boundaries)
    if batch_tokens is not None:
        sizes = [batch_tokens // length for length in lengths]
        if min(sizes) < 1:
            raise ValueError(
                f"batch_tokens={batch_tokens} is smaller than the longest bucket "
                f"({lengths[-1]} tokens)."
            )
    else:
        sizes = [batch_size] * len(lengths)

    dataset = as_corpus(pairs).dataset()
    if shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )

    def tokenize(sources, targets):
        source_ids = tf.cast(source_tokenize(sources), tf.int32)
        target_ids = tf.cast(target_tokenize(targets), tf.int32)
        return source_ids, target_ids

    dataset = dataset.batch(tokenize_batch).map(
        tokenize, num_parallel_calls=tf.data.AUTOTUNE
    )
    dataset = dataset.unbatch()

    def teacher_forcing(source_ids, target_ids):
        eos = tf.constant([EOS_ID], tf.int32)
        bos = tf.constant([BOS_ID], tf.int32)
        return (
            tf.concat([source_ids, eos], 0),
            tf.concat([bos, target_ids], 0),
            tf.concat([target_ids, eos], 0),
        )

    dataset = dataset.map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(
        lambda source, target_in, target_out: tf.logical_and(
            tf.size(source) <= max_source_length,
            tf.size(target_in) <= max_target_length,
        )
    )
    # A bucket is a (source length, target length) pair of padded lengths.
    n = len(lengths)
    lengths_t = tf.constant(lengths, tf.int64)
    sizes_t = tf.constant(
        [min(sizes[i], sizes[j]) for i in range(n) for j in range(n)], tf.int64
    )

    def length_index(ids):
        length = tf.cast(tf.size(ids), tf.int64)
        return tf.argmax(tf.cast(lengths_t >= length, tf.int32), output_type=tf.int64)

    def bucket(source, target_in, target_out):
        return length_index(source) * n + length_index(target_in)

    def batch_bucket(key, window):
        source_length, target_length = lengths_t[key // n], lengths_t[key % n]
        return window.padded_batch(
            sizes_t[key],
            padded_shapes=([source_length], [target_length], [target_length]),
            padding_values=(PAD_ID, PAD_ID, PAD_ID),
            drop_remainder=drop_remainder,
        )

    dataset = dataset.group_by_window(
        key_func=bucket,
        reduce_func=batch_bucket,
        window_size_func=lambda key: sizes_t[key],
    )
    dataset = dataset.map(
        lambda source, target_in, target_out: (
            {"source": source, "target": target_in},
            target_out,
        )
    )
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def padding_fraction(dataset, num_batches=None):
    """Fraction of padding in the source and target of `dataset`'s batches.

    Returns:
        dict with `source`, `target` (pad fraction of the padded tokens),
        `batches` and `shapes` (the set of `(batch, source length, target
        length)` shapes seen).
    """
    counts = {"source": [0, 0], "target": [0, 0]}
    shapes = set()
    batches = 0
    for inputs, target_out in dataset.take(num_batches or -1):
        for name, ids in (("source", inputs["source"]), ("target", target_out)):
            counts[name][0] += int(tf.reduce_sum(tf.cast(ids == PAD_ID, tf.int64)))
            counts[name][1] += int(tf.size(ids))
        shapes.add((*inputs["source"].shape, target_out.shape[1]))
        batches += 1
    return {
        "source": counts["source"][0] / max(counts["source"][1], 1),
        "target": counts["target"][0] / max(counts["target"][1], 1),
        "batches": batches,
        "shapes": shapes,
    }
