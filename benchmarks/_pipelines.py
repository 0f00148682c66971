"""End-to-end training: each system's own input pipeline on the same corpus.

The corpus is `_common.corpus(batches)`: seeded (source, target) id pairs with
lengths uniform in [20, 64]. Peers pad each batch to its longest sequence
(keras-hub: `tf.data` `padded_batch` + `model.fit`; torch: `DataLoader` with
a padding `collate_fn`). Throughput is real (non-pad) target tokens per
second of wall time per epoch; epoch 1 includes tracing and, with XLA, one
compilation per new batch shape; the steady state is the throughput of
epochs 2 to N together (one epoch of 16 batches lasts 9-20 s here, and a
single late retrace or a load spike moved a one-epoch number by 40%).

Two modes (`task["stream"]`, default `True`):

- stream: the Keras systems train as a long run does (and as our trainer
  does with `steps_per_epoch`): one endless, shuffled stream of the corpus
  (repeated before batching), `fit(steps_per_epoch=batches)`, so every
  batch is full; real tokens are counted as batches are produced (Keras
  reads one batch ahead, so an epoch's count covers as many batches, shifted
  by one). torch's `DataLoader` with `drop_last=True` has full batches
  anyway and runs its epochs as passes.
- one pass (`stream=False`, `compare.py --e2e-one-pass`): one pass over the
  corpus per epoch, every pair trained on. On 512 pairs our buckets (16
  `(S, T)` pairs of bucket lengths here) make 24 batches, 20 of them partial
  (3 to 31 sentences), which no real corpus of millions of pairs has.
"""

import time

import numpy as np
from _common import CONFIG
from _common import corpus
from _common import pad_batch
from _common import peak_rss_mib


def _real_tokens(pairs, batch_size):
    """Real target tokens of an epoch (the corpus is whole batches)."""
    used = len(pairs) // batch_size * batch_size
    return int(sum(len(t) for _, t in pairs[:used]))


def _result(pairs, epoch_times, batch_size, extra=None, epoch_tokens=None):
    """The e2e row. `epoch_tokens`: real target tokens trained on in each
    epoch when counted (see `_counting`); by default the whole corpus."""
    tokens = epoch_tokens or [_real_tokens(pairs, batch_size)] * len(epoch_times)
    result = {
        "status": "ok",
        "pairs": len(pairs),
        "real_tokens_per_epoch": epoch_tokens or tokens[0],
        "epoch_s": epoch_times,
        "epoch_tokens_per_s": [n / t for n, t in zip(tokens, epoch_times)],
        "first_epoch_tokens_per_s": tokens[0] / epoch_times[0],
        # Steady state: epochs 2..N together (epoch 1 alone for one epoch).
        "tokens_per_s": sum(tokens[1:] or tokens) / sum(epoch_times[1:] or epoch_times),
        "peak_rss_mib": peak_rss_mib(),
    }
    result.update(extra or {})
    return result


# ---------------------------------------------------------------------------
# Keras peers: tf.data, pad to the batch max, model.fit.


def tf_padded_dataset(pairs, batch_size, seed, config=CONFIG, repeat=False):
    """The peers' `tf.data` pipeline: shuffle, (repeat,) pad to the batch max."""
    import tensorflow as tf

    def ragged(sequences):
        return tf.RaggedTensor.from_row_lengths(
            np.concatenate(sequences), [len(s) for s in sequences]
        )

    source = ragged([s for s, _ in pairs])
    target = ragged([t for _, t in pairs])
    bos = tf.constant([config["bos_id"]], tf.int32)

    def to_example(source, target):
        target_in = tf.concat([bos, target[:-1]], axis=0)
        return source, target_in, target

    def to_inputs(source, target_in, target_out):
        return {"source": source, "target": target_in}, target_out

    dataset = tf.data.Dataset.from_tensor_slices((source, target)).shuffle(
        len(pairs), seed=seed, reshuffle_each_iteration=True
    )
    if repeat:
        dataset = dataset.repeat()
    return (
        dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
        .padded_batch(batch_size, padding_values=config["pad_id"], drop_remainder=True)
        .map(to_inputs)
        .prefetch(tf.data.AUTOTUNE)
    )


def _fit_epochs(model, dataset, epochs, counter=None, steps=None):
    """Fits `epochs` epochs (of `steps` batches each on an endless dataset);
    returns (seconds, batches, real target tokens) per epoch, the tokens
    read from `counter` (see `_counting`), or `None` without one."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.batches = [], []
            self.tokens = None if counter is None else []

        def on_epoch_begin(self, epoch, logs=None):
            self.batches.append(0)
            self.counted = None if counter is None else int(counter.numpy())
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.batches[-1] += 1

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)
            if counter is not None:
                self.tokens.append(int(counter.numpy()) - self.counted)

    timer = EpochTimer()
    model.fit(
        dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer]
    )
    return timer.times, timer.batches, timer.tokens


def run_keras(task, pairs, build):
    import _keras_systems as ks

    ks.set_policy(task.get("dtype", "float32"))
    model = build()
    ks.compile_for_training(model, task["jit"], loss=task.get("loss", "keras"))
    stream = task.get("stream", True)
    dataset = tf_padded_dataset(
        pairs, CONFIG["batch_size"], CONFIG["seed"], repeat=stream
    )
    counter, steps = None, task["batches"] if stream else None
    if stream:
        dataset, counter = _counting(dataset, CONFIG["pad_id"])
    times, batches, tokens = _fit_epochs(model, dataset, task["epochs"], counter, steps)
    extra = {"jit": task["jit"], "batches_per_epoch": batches, "stream": stream}
    return _result(pairs, times, CONFIG["batch_size"], extra, tokens)


# ---------------------------------------------------------------------------
# torch: Dataset + DataLoader with a pad-to-batch-max collate_fn.


def run_torch(task, pairs):
    import _torch_system as ts
    import torch

    ts.setup(threads=task.get("threads", 2))

    class PairDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, index):
            return pairs[index]

    def collate(batch):
        return ts.torch_batch(pad_batch(batch))

    loader = torch.utils.data.DataLoader(
        PairDataset(),
        batch_size=CONFIG["batch_size"],
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        num_workers=0,
        generator=torch.Generator().manual_seed(CONFIG["seed"]),
    )
    model = ts.TorchTransformer()
    model.train()
    step = ts.make_train_step(model)
    times, batches = [], []
    for _ in range(task["epochs"]):
        start = time.perf_counter()
        batches.append(0)
        for source, target_in, target_out in loader:
            step(source, target_in, target_out)
            batches[-1] += 1
        times.append(time.perf_counter() - start)
    return _result(pairs, times, CONFIG["batch_size"], {"batches_per_epoch": batches})


# ---------------------------------------------------------------------------
# Ours: keras_transformer.data.


def ids_to_text(ids):
    """Word ids (EOS dropped) as a space-separated string: "523 17 88"."""
    return " ".join(str(int(i)) for i in ids[:-1])


def id_tokenize(strings):
    """`tf.string [N]` of space-separated ids -> ragged int32 `[N, None]`.

    The in-graph "tokenizer" for `make_dataset` on this pre-tokenized corpus
    (the peers skip tokenization entirely; a SentencePiece model would add
    its own cost to ours alone).
    """
    import tensorflow as tf

    return tf.ragged.map_flat_values(
        tf.strings.to_number, tf.strings.split(strings), out_type=tf.int32
    )


def ours_dataset(
    pairs,
    batch_size,
    seed,
    config=CONFIG,
    batch_tokens=None,
    static_shapes=False,
    repeat=False,
    bucket_boundaries=None,
):
    """`keras_transformer.data.make_dataset` over the same corpus.

    The pairs go in as strings of word ids without EOS; `make_dataset` adds
    EOS to the source and makes `target_in = BOS + y`, `target_out = y + EOS`:
    exactly the peers' tensors, but length-bucketed (padded to the bucket
    length, default boundaries 24/32/48/64 here) instead of to the batch max.
    `drop_remainder=False` so every pair is trained on, like the peers.
    With `batch_tokens`, batches hold up to that many padded tokens per side
    (more sentences in short buckets) instead of `batch_size` sentences.
    With `static_shapes`, the XLA-friendly settings: both sides padded to one
    bucket length (`bucket_by="longest"`) and each bucket's partial batch
    dropped (`drop_remainder=True`), so at most one shape per boundary
    occurs (4 here) and each compiles once; the dropped pairs differ per
    epoch (shuffling), so real tokens are counted as they are trained on.
    With `repeat`, one endless stream (repeated before batching, so every
    batch is full, as in a long run); `bucket_boundaries` as in
    `make_dataset` (default `DEFAULT_BOUNDARIES`), or `"fine"` for
    `FINE_BOUNDARIES`.
    """
    from keras_transformer.data import FINE_BOUNDARIES
    from keras_transformer.data import make_dataset

    if bucket_boundaries == "fine":
        bucket_boundaries = FINE_BOUNDARIES

    text_pairs = [(ids_to_text(s), ids_to_text(t)) for s, t in pairs]
    return make_dataset(
        text_pairs,
        id_tokenize,
        id_tokenize,
        batch_size=None if batch_tokens else batch_size,
        batch_tokens=batch_tokens,
        max_source_length=config["max_length"],
        max_target_length=config["max_length"],
        shuffle=True,
        seed=seed,
        repeat=repeat,
        drop_remainder=static_shapes or repeat,
        bucket_by="longest" if static_shapes else "pair",
        bucket_boundaries=bucket_boundaries,
    )


def run_ours_data(task, pairs):
    """Ours, with our own input pipeline (`keras_transformer.data`)."""
    try:
        from keras_transformer.data import make_dataset  # noqa: F401
    except ImportError as error:  # the module is being written
        return {
            "status": "todo",
            "note": f"keras_transformer.data.make_dataset unavailable ({error})",
        }
    import _keras_systems as ks

    ks.set_policy(task.get("dtype", "float32"))
    model = ks.build_ours()
    ks.compile_for_training(model, task["jit"], loss=task.get("loss", "keras"))
    static_shapes = task.get("static_shapes", False)
    stream = task.get("stream", True)
    dataset = ours_dataset(
        pairs,
        CONFIG["batch_size"],
        CONFIG["seed"],
        batch_tokens=task.get("batch_tokens"),
        static_shapes=static_shapes,
        repeat=stream,
        bucket_boundaries=task.get("bucket_boundaries"),
    )
    counter, steps = None, task["batches"] if stream else None
    if static_shapes or stream:
        dataset, counter = _counting(dataset, CONFIG["pad_id"])
    times, batches, tokens = _fit_epochs(model, dataset, task["epochs"], counter, steps)
    extra = {
        "jit": task["jit"],
        "batches_per_epoch": batches,
        "pipeline": "keras_transformer.data.make_dataset",
        "batch_tokens": task.get("batch_tokens"),
        "static_shapes": static_shapes,
        "stream": stream,
        "bucket_boundaries": task.get("bucket_boundaries"),
        "loss": task.get("loss", "keras"),
    }
    return _result(pairs, times, CONFIG["batch_size"], extra, tokens)


def _counting(dataset, pad_id):
    """`dataset` that adds each batch's real target tokens to a variable as
    it is produced. Read at epoch ends of a finite dataset (its iterator is
    exhausted there, nothing prefetched beyond), the count is exact; on an
    endless one `fit` has read one batch ahead (measured: 6, 11, 16 batches
    produced after epochs of 5 steps), so each epoch counts as many batches
    as it trained on, shifted by one."""
    import tensorflow as tf

    counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def count(inputs, target_out):
        real = tf.math.count_nonzero(tf.not_equal(target_out, pad_id), dtype=tf.int64)
        with tf.control_dependencies([counter.assign_add(real)]):
            return inputs, tf.identity(target_out)

    return dataset.map(count), counter


def run(task):
    pairs = corpus(task["batches"])
    system = task["system"]
    if system == "torch":
        return run_torch(task, pairs)
    if system == "keras_hub":
        import _keras_systems as ks

        return run_keras(task, pairs, ks.build_keras_hub)
    if system == "ours_padded":
        # Stand-in: our model behind the peers' pad-to-batch-max tf.data.
        import _keras_systems as ks

        return run_keras(task, pairs, ks.build_ours)
    if system == "ours_data":
        return run_ours_data(task, pairs)
    raise ValueError(system)
