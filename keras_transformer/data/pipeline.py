"""tf.data training pipelines: tokenize, filter, bucket, batch, teacher-force."""

import numpy as np
import tensorflow as tf

from keras_transformer.data.corpus import as_corpus
from keras_transformer.data.errors import DataError
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

# Two bucket lengths per octave: few batch shapes, for XLA and TPUs, where
# each new shape is compiled.
DEFAULT_BOUNDARIES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Four bucket lengths per octave: less padding but more batch shapes; for
# training without XLA, where a new shape costs no compilation.
FINE_BOUNDARIES = (
    8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 256, 320, 384, 448, 512,
)  # fmt: skip
BUCKET_MODES = ("pair", "longest")


def bucket_lengths(max_length, boundaries=None):
    """The padded lengths of the buckets up to `max_length`, ascending.

    Args:
        max_length: int, the longest sequence kept (the last bucket).
        boundaries: the padded lengths to use below `max_length`; default
            `DEFAULT_BOUNDARIES` (`8, 12, 16, 24, 32, 48, 64, 96, 128, 192,
            ...`: each a third to a half longer than the one before, so at
            most about a third of a padded row is padding).

    Returns:
        A list of ints ending with `max_length`.

    Example:

    >>> bucket_lengths(48)
    [8, 12, 16, 24, 32, 48]
    >>> bucket_lengths(40, boundaries=[10, 20])
    [10, 20, 40]
    """
    boundaries = sorted(set(DEFAULT_BOUNDARIES if boundaries is None else boundaries))
    if any(int(b) < 1 for b in boundaries):
        raise ValueError(f"`bucket_boundaries` must be >= 1. Received: {boundaries}")
    return [int(b) for b in boundaries if b < max_length] + [int(max_length)]


def bucket_shapes(
    batch_size=None,
    batch_tokens=None,
    max_source_length=128,
    max_target_length=128,
    bucket_boundaries=None,
    bucket_by="pair",
):
    """Every batch shape `make_dataset` can produce with these settings.

    With `pad_to_bucket=True` and `drop_remainder=True`, each batch of
    `make_dataset(..., same settings)` has `source` shape `[B, S]` and
    `target`/`target_out` shape `[B, T]` for one `(B, S, T)` listed here:
    the shapes to compile for (XLA, TPU). Usually only some of them occur,
    because source and target lengths are correlated.

    Args:
        batch_size, batch_tokens, max_source_length, max_target_length,
        bucket_boundaries, bucket_by: as in `make_dataset`.

    Returns:
        A sorted list of `(batch, source_length, target_length)` tuples.

    Example:

    >>> bucket_shapes(batch_tokens=4096, max_source_length=16,
    ...               max_target_length=16, bucket_by="longest")
    [(256, 16, 16), (341, 12, 12), (512, 8, 8)]
    """
    plan = _BucketPlan(
        batch_size,
        batch_tokens,
        max_source_length,
        max_target_length,
        bucket_boundaries,
        bucket_by,
    )
    return sorted(set(plan.shapes))


class _BucketPlan:
    """Bucket keys -> padded lengths and batch sizes (one place for both)."""

    def __init__(
        self,
        batch_size,
        batch_tokens,
        max_source_length,
        max_target_length,
        bucket_boundaries,
        bucket_by,
    ):
        _check_plan(
            batch_size, batch_tokens, max_source_length, max_target_length, bucket_by
        )
        self.bucket_by = bucket_by
        if bucket_by == "pair":
            # Separate padded lengths per side: keys (i, j) -> i * n_t + j.
            self.source_lengths = bucket_lengths(max_source_length, bucket_boundaries)
            self.target_lengths = bucket_lengths(max_target_length, bucket_boundaries)
            pairs = [(s, t) for s in self.source_lengths for t in self.target_lengths]
        else:
            # One padded length L for both sides (capped at each side's max).
            self.lengths = bucket_lengths(
                max(max_source_length, max_target_length), bucket_boundaries
            )
            pairs = [
                (min(length, max_source_length), min(length, max_target_length))
                for length in self.lengths
            ]
        self.pairs = pairs
        self.sizes = _batch_sizes(pairs, batch_size, batch_tokens)
        self.shapes = [(b, s, t) for b, (s, t) in zip(self.sizes, pairs)]

    def keys(self, source_lengths, target_lengths):
        """The bucket keys (int64 `[N]`) of pairs with these lengths `[N]`."""
        if self.bucket_by == "pair":
            i = _index(self.source_lengths, source_lengths)
            j = _index(self.target_lengths, target_lengths)
            return i * len(self.target_lengths) + j
        return _index(self.lengths, tf.maximum(source_lengths, target_lengths))


def _check_plan(
    batch_size, batch_tokens, max_source_length, max_target_length, bucket_by
):
    """Raises `ValueError` for batching arguments `_BucketPlan` cannot use."""
    if (batch_size is None) == (batch_tokens is None):
        raise ValueError(
            "Pass exactly one of `batch_size` and `batch_tokens`. Received: "
            f"batch_size={batch_size}, batch_tokens={batch_tokens}"
        )
    given = {
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "max_source_length": max_source_length,
        "max_target_length": max_target_length,
    }
    _check_ints_at_least_one(**{k: v for k, v in given.items() if v is not None})
    if max_source_length < 2 or max_target_length < 2:
        raise ValueError(
            "`max_source_length` and `max_target_length` must be >= 2 "
            "(one token plus EOS/BOS). Received: "
            f"{max_source_length}, {max_target_length}"
        )
    if bucket_by not in BUCKET_MODES:
        raise ValueError(
            f"`bucket_by` must be one of {BUCKET_MODES}. Received: {bucket_by!r}"
        )


def _batch_sizes(pairs, batch_size, batch_tokens):
    """The batch size of each bucket of padded lengths `(S, T)` in `pairs`.

    `batch_size` for every bucket, or `batch_tokens // max(S, T)`.
    """
    if batch_tokens is None:
        return [batch_size] * len(pairs)
    sizes = [batch_tokens // max(s, t) for s, t in pairs]
    if min(sizes) < 1:
        raise ValueError(
            f"batch_tokens={batch_tokens} is smaller than the longest bucket "
            f"({max(max(p) for p in pairs)} tokens)."
        )
    return sizes


def _index(lengths, values):
    """For each of `values`, the index of the smallest of `lengths` >= it."""
    lengths = tf.constant(lengths, tf.int64)
    values = tf.cast(values, tf.int64)
    return tf.reduce_sum(
        tf.cast(lengths[tf.newaxis, :] < values[:, tf.newaxis], tf.int64), axis=1
    )


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


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
    pad_to_bucket=True,
    bucket_by="pair",
    tokenize_batch=512,
):
    """A `tf.data` pipeline of padded, length-bucketed translation batches.

    Steps, all in the TensorFlow graph (strings never reach the model):

    1. shuffle the string pairs (and repeat, if asked, before batching, so
       no pair is lost at epoch ends);
    2. tokenize them with `source_tokenize` / `target_tokenize`, called on
       batches of `tokenize_batch` strings; in the same batched step,
       append EOS to the source, make the teacher-forcing pair
       `target_in = [BOS] + y`, `target_out = y + [EOS]`, and drop pairs
       longer than the limits (EOS/BOS counted);
    3. group pairs by length into buckets (`tf.data.Dataset.group_by_window`)
       and pad each batch with `PAD_ID` to its bucket's length, so only the
       few static shapes of `bucket_shapes(...)` occur; with
       `drop_remainder=True` the batch dimension is fixed per bucket too,
       and the same pipeline runs under XLA and on TPUs.

    Buckets: with `bucket_by="pair"` (default) a bucket is a pair of padded
    lengths `(S, T)` from `bucket_boundaries`, the smallest fitting each
    side, so a short German compound is not padded to its long English
    source; with `bucket_by="longest"` both sides are padded to one length
    `L`: more padding, but fewer shapes (one per boundary). Prefer
    `"longest"` where each new shape costs a compilation (XLA, TPU).

    Boundaries: `DEFAULT_BOUNDARIES` has two bucket lengths per octave,
    `FINE_BOUNDARIES` four: less padding per batch, in more shapes. Choose
    `FINE_BOUNDARIES` with `batch_tokens` when training without XLA (in
    graph mode a new shape is only a retrace, and Keras relaxes the shapes
    after a few): `keras-transformer train --bucket-boundaries fine
    --batch-tokens N`. With a fixed `batch_size` the finer buckets do not
    pay off, because the short buckets' batches get smaller. Under XLA each
    extra shape costs one more compilation. More buckets also leave more
    pairs in each pass's dropped partial batches (`drop_remainder=True`;
    `count_batches` counts them); with `repeat=True` none are lost.
    Measurements: `benchmarks/README.md`.

    Batch size: with `batch_size`, a fixed number of sentences per batch;
    with `batch_tokens`, a bucket's batch holds
    `batch_tokens // max(S, T)` sentences, so no batch has more than
    `batch_tokens` padded tokens per side (the paper's batches had ~25,000
    source and ~25,000 target tokens).

    Args:
        pairs: a `ParallelCorpus`, a list of `(source, target)` strings or a
            `tf.data.Dataset` of scalar `(tf.string, tf.string)` pairs.
        source_tokenize: callable `tf.string [N] -> tf.RaggedTensor int
            [N, None]` that runs in the graph, e.g.
            `SubwordTokenizer.tokenize`; it must not add BOS/EOS.
        target_tokenize: same, for the target side.
        batch_size: int, sentences per batch (give this or `batch_tokens`).
        batch_tokens: int, padded tokens per side per batch.
        max_source_length: int, longest source kept, EOS included.
        max_target_length: int, longest target kept, BOS (or EOS) included.
        bucket_boundaries: padded lengths of the buckets below the max
            lengths; default `DEFAULT_BOUNDARIES` (`8, 12, 16, 24, 32, 48,
            64, 96, 128, ...`); see `FINE_BOUNDARIES` above.
        shuffle: bool, shuffle the pairs (each epoch anew).
        shuffle_buffer: int, pairs in the shuffle buffer.
        seed: int or `None`, the shuffle seed.
        repeat: bool, repeat forever (use with `steps_per_epoch`).
        drop_remainder: bool, drop each bucket's last partial batch (needed
            for a static batch dimension; use `False` for evaluation).
        pad_to_bucket: bool, pad to the bucket's length (static shapes);
            `False` pads to the longest pair of each batch (less padding,
            a new shape for almost every batch).
        bucket_by: `"pair"` or `"longest"`, see above.
        tokenize_batch: int, strings per tokenizer call.

    Returns:
        A `tf.data.Dataset` of `({"source": int32 [B, S], "target": int32
        [B, T]}, target_out int32 [B, T])`, padded with `PAD_ID` (0), ready
        for `model.fit`.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transformer.data import demo_pairs
    >>> corpus = demo_pairs("train")
    >>> # Characters as tokens; usually `SubwordTokenizer(...).tokenize`.
    >>> tokenize = lambda texts: tf.strings.unicode_decode(texts, "UTF-8")
    >>> dataset = make_dataset(corpus, tokenize, tokenize,
    ...                        batch_tokens=4096, max_source_length=64,
    ...                        max_target_length=64, shuffle=False)
    >>> inputs, target_out = next(iter(dataset))
    >>> # One bucket's shape: [B, S] and [B, T] with B = 4096 // max(S, T).
    >>> tuple(inputs["source"].shape), tuple(target_out.shape)
    ((128, 32), (128, 32))
    """
    plan = _BucketPlan(
        batch_size,
        batch_tokens,
        max_source_length,
        max_target_length,
        bucket_boundaries,
        bucket_by,
    )
    _check_ints_at_least_one(
        shuffle_buffer=shuffle_buffer, tokenize_batch=tokenize_batch
    )
    dataset = _pair_strings(pairs, shuffle, shuffle_buffer, seed, repeat)
    prepare = _prepare_fn(
        source_tokenize, target_tokenize, plan, max_source_length, max_target_length
    )
    dataset = dataset.batch(tokenize_batch).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE
    )
    # Rows of fixed width (the max lengths): unbatching them is cheap.
    dataset = _batch_by_bucket(dataset.unbatch(), plan, drop_remainder, pad_to_bucket)
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_batches(
    pairs,
    source_tokenize,
    target_tokenize,
    batch_size=None,
    batch_tokens=None,
    max_source_length=128,
    max_target_length=128,
    bucket_boundaries=None,
    bucket_by="pair",
    tokenize_batch=512,
    until_kept=False,
):
    """What one pass of `make_dataset(..., drop_remainder=True)` yields.

    Tokenizes `pairs` once (no shuffle, no model) and counts the pairs of
    each length bucket: a bucket of `n` pairs and batch size `B` gives
    `n // B` full batches and leaves `n % B` pairs in its last, partial
    batch, whatever the shuffle order. The same arguments as `make_dataset`
    give the same buckets.

    Args:
        pairs, source_tokenize, target_tokenize, batch_size, batch_tokens,
        max_source_length, max_target_length, bucket_boundaries, bucket_by,
        tokenize_batch: as in `make_dataset`.
        until_kept: bool, stop reading at the first chunk of
            `tokenize_batch` pairs that keeps a pair (enough to know that an
            endless `repeat=True` stream yields batches); the counts then
            cover only the pairs read.

    Returns:
        A dict: `pairs` (read), `too_long` (beyond the length limits),
        `batches` (full batches), `partial` (pairs left in the buckets'
        partial batches) and `buckets`, a list of `(pairs, batch size,
        source length, target length)` for each bucket holding a pair.

    Raises:
        DataError: when `pairs` is known to hold no pair.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transformer.data import demo_pairs
    >>> tokenize = lambda texts: tf.strings.unicode_decode(texts, "UTF-8")
    >>> counts = count_batches(demo_pairs("train"), tokenize, tokenize,
    ...                        batch_size=64, max_source_length=64,
    ...                        max_target_length=64)
    >>> counts["pairs"], counts["batches"], counts["partial"], counts["too_long"]
    (8515, 129, 259, 0)
    """
    plan = _BucketPlan(
        batch_size,
        batch_tokens,
        max_source_length,
        max_target_length,
        bucket_boundaries,
        bucket_by,
    )
    _check_ints_at_least_one(tokenize_batch=tokenize_batch)

    def keys(sources, targets):
        # The lengths of `teacher_forcing_ids`: one special token added.
        source_length = _ids(source_tokenize(sources)).row_lengths() + 1
        target_length = _ids(target_tokenize(targets)).row_lengths() + 1
        keep, source_length, target_length = _within_limits(
            source_length, target_length, max_source_length, max_target_length
        )
        return tf.size(keep), plan.keys(source_length, target_length)

    dataset = _pair_strings(
        pairs, shuffle=False, shuffle_buffer=1, seed=None, repeat=False
    ).batch(tokenize_batch)
    dataset = dataset.map(keys, num_parallel_calls=tf.data.AUTOTUNE)
    counts = np.zeros(len(plan.sizes), np.int64)
    read = 0
    for size, chunk_keys in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        read += int(size)
        counts += np.bincount(chunk_keys, minlength=len(counts))
        if until_kept and counts.any():
            break
    sizes = np.asarray(plan.sizes, np.int64)
    return {
        "pairs": read,
        "too_long": read - int(counts.sum()),
        "batches": int(np.sum(counts // sizes)),
        "partial": int(np.sum(counts % sizes)),
        "buckets": [
            (int(n), int(b), int(s), int(t))
            for n, b, (s, t) in zip(counts, sizes, plan.pairs)
            if n
        ],
    }


def _check_ints_at_least_one(**values):
    """Raises `ValueError` for any of `values` that is not an int >= 1."""
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1. Received: {value!r}")


def _pair_strings(pairs, shuffle, shuffle_buffer, seed, repeat):
    """The `(source, target)` string dataset of `pairs`, shuffled and repeated.

    Raises:
        DataError: when `pairs` is known to hold no pair.
    """
    corpus = as_corpus(pairs)
    if hasattr(corpus, "__len__") and len(corpus) == 0:
        raise DataError(f"{corpus.name}: no sentence pairs")
    dataset = corpus.dataset()
    if shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if repeat:
        # Before batching, so that no pair is lost at epoch ends.
        dataset = dataset.repeat()
    return dataset


def _prepare_fn(
    source_tokenize, target_tokenize, plan, max_source_length, max_target_length
):
    """The batched map function: string pairs -> keyed, length-filtered rows.

    The returned function takes `[N]` source and target strings and returns
    `(key, source_length, target_length, source, target_in, target_out)` for
    the pairs within the length limits: int64 bucket keys and lengths `[M]`,
    and int32 ids padded with `PAD_ID` to the max lengths.
    """

    def prepare(sources, targets):
        source, target_in, target_out = teacher_forcing_ids(
            source_tokenize(sources), target_tokenize(targets)
        )
        keep, source_length, target_length = _within_limits(
            source.row_lengths(),
            target_in.row_lengths(),
            max_source_length,
            max_target_length,
        )
        return (
            plan.keys(source_length, target_length),
            source_length,
            target_length,
            _dense_rows(source, keep, max_source_length),
            _dense_rows(target_in, keep, max_target_length),
            _dense_rows(target_out, keep, max_target_length),
        )

    return prepare


def _within_limits(source_length, target_length, max_source_length, max_target_length):
    """The pairs within the length limits: `(keep, source_length, target_length)`.

    `keep` is bool `[N]`; the lengths of the kept pairs are `[M]`. Shared by
    `make_dataset` and `count_batches`, so both drop the same pairs.
    """
    keep = tf.logical_and(
        source_length <= max_source_length, target_length <= max_target_length
    )
    return (
        keep,
        tf.boolean_mask(source_length, keep),
        tf.boolean_mask(target_length, keep),
    )


def teacher_forcing_ids(source_ids, target_ids):
    """Adds the special tokens of one batch of tokenized pairs.

    Args:
        source_ids: a tokenizer's output for `N` sources: ragged or dense
            ids `[N, None]` (see `make_dataset`'s `source_tokenize`).
        target_ids: the same for the `N` targets.

    Returns:
        Ragged int32 `[N, None]` tensors `(source, target_in, target_out)`:
        `source + [EOS]`, `[BOS] + target` and `target + [EOS]`.
    """
    source_ids = _ids(source_ids)
    target_ids = _ids(target_ids)
    rows = [source_ids.nrows(), 1]
    eos = tf.fill(rows, tf.constant(EOS_ID, tf.int32))
    bos = tf.fill(rows, tf.constant(BOS_ID, tf.int32))
    return (
        tf.concat([source_ids, eos], axis=1),
        tf.concat([bos, target_ids], axis=1),
        tf.concat([target_ids, eos], axis=1),
    )


def _dense_rows(ids, keep, width):
    """The rows of ragged `ids` where `keep`, padded with `PAD_ID` to `width`.

    Rows longer than `width` are cut; `keep` must exclude them.
    """
    padded = ids.to_tensor(PAD_ID, shape=[None, width])
    return tf.boolean_mask(padded, keep)


def _batch_by_bucket(dataset, plan, drop_remainder, pad_to_bucket):
    """Batches the rows of `_prepare_fn` by bucket key, cut to the batch's shape.

    Each bucket's batch has `plan.sizes[key]` rows (fewer for a last partial
    batch unless `drop_remainder`) and is cut to the bucket's padded lengths
    (`pad_to_bucket`) or to its longest pair. Yields `({"source",
    "target"}, target_out)`.
    """
    source_lengths = tf.constant([s for s, _ in plan.pairs], tf.int64)
    target_lengths = tf.constant([t for _, t in plan.pairs], tf.int64)
    sizes = tf.constant(plan.sizes, tf.int64)

    def batch_bucket(key, window):
        def cut(_, source_length, target_length, source, target_in, target_out):
            if pad_to_bucket:
                s, t = source_lengths[key], target_lengths[key]
            else:
                s, t = tf.reduce_max(source_length), tf.reduce_max(target_length)
            inputs = {"source": source[:, :s], "target": target_in[:, :t]}
            return inputs, target_out[:, :t]

        batches = window.batch(sizes[key], drop_remainder=drop_remainder)
        return batches.map(cut)

    return dataset.group_by_window(
        key_func=lambda key, *rest: key,
        reduce_func=batch_bucket,
        window_size_func=lambda key: sizes[key],
    )


def _ids(ids):
    """A tokenizer's output as ragged int32 `[N, None]`."""
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.convert_to_tensor(ids)
        if ids.shape.rank != 2:
            raise ValueError(
                "A tokenize function must return ids of shape [N, None] (best "
                f"a tf.RaggedTensor). Received shape {ids.shape}"
            )
        # Dense ids: trailing PAD_ID is padding, not tokens.
        ids = tf.RaggedTensor.from_tensor(ids, padding=tf.cast(PAD_ID, ids.dtype))
    elif ids.ragged_rank > 1:  # e.g. [N, words, pieces]
        ids = ids.merge_dims(1, -1)
    return tf.cast(ids, tf.int32)


def padding_fraction(dataset, num_batches=None):
    """The fraction of padding in the batches of a `make_dataset` dataset.

    Args:
        dataset: a dataset of `({"source": ..., "target": ...}, target_out)`.
        num_batches: int, the batches to look at; `None` for all (the
            dataset must then be finite).

    Returns:
        A dict: `source` and `target` (the fraction of the padded tokens
        that are `PAD_ID`; `target` counts `target_out`), `batches`, `pairs`
        and `shapes` (the set of `(batch, source length, target length)`
        shapes seen).

    Example:

    >>> import tensorflow as tf
    >>> from keras_transformer.data import demo_pairs, make_dataset
    >>> tokenize = lambda texts: tf.strings.unicode_decode(texts, "UTF-8")
    >>> dataset = make_dataset(demo_pairs("train"), tokenize, tokenize,
    ...                        batch_tokens=4096, max_source_length=64,
    ...                        max_target_length=64, drop_remainder=False)
    >>> stats = padding_fraction(dataset)  # one pass, every pair
    >>> round(stats["source"], 2), round(stats["target"], 2), stats["pairs"]
    (0.11, 0.19, 8515)
    """
    counts = {"source": [0, 0], "target": [0, 0]}
    shapes = set()
    batches = pairs = 0
    take = -1 if num_batches is None else num_batches
    for inputs, target_out in dataset.take(take):
        for name, ids in (("source", inputs["source"]), ("target", target_out)):
            ids = np.asarray(ids)
            counts[name][0] += int(np.sum(ids == PAD_ID))
            counts[name][1] += ids.size
        shapes.add((*inputs["source"].shape, target_out.shape[1]))
        batches += 1
        pairs += int(target_out.shape[0])
    return {
        "source": counts["source"][0] / max(counts["source"][1], 1),
        "target": counts["target"][0] / max(counts["target"][1], 1),
        "batches": batches,
        "pairs": pairs,
        "shapes": shapes,
    }
