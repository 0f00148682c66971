"""End-to-end training: each system's own input pipeline on the same corpus.

The corpus is `_common.corpus(batches)`. The Keras systems train on one
endless, shuffled stream of it (repeated before batching, so every batch is
full) with `fit(steps_per_epoch=batches)`: ours through
`keras_transformer.data.make_dataset` (length buckets), keras-hub through
`tf.data` `padded_batch` (pad to the batch max). torch's `DataLoader` pads
to the batch max and, with `drop_last=True`, has full batches too. The
throughput is real (non-pad) target tokens per second of wall time; epoch 1
includes tracing, epochs 2 to N together are the steady state.
"""

import time

from _common import CONFIG
from _common import corpus
from _common import count_tokens
from _common import pad_batch
from _common import peak_rss_mib


def epoch_result(epoch_times, epoch_tokens, extra):
    """The e2e row from per-epoch seconds and real target tokens."""
    steady_tokens = epoch_tokens[1:] or epoch_tokens
    steady_times = epoch_times[1:] or epoch_times
    return {
        "status": "ok",
        "epoch_s": epoch_times,
        "epoch_tokens": epoch_tokens,
        "first_epoch_tokens_per_s": epoch_tokens[0] / epoch_times[0],
        "tokens_per_s": sum(steady_tokens) / sum(steady_times),
        "peak_rss_mib": peak_rss_mib(),
        **extra,
    }


# ---------------------------------------------------------------------------
# Keras systems: a tf.data stream, model.fit.


def tf_padded_dataset(pairs, config=CONFIG):
    """The peers' endless `tf.data` stream: shuffle, repeat, pad to the batch max."""
    import numpy as np
    import tensorflow as tf

    def ragged(sequences):
        return tf.RaggedTensor.from_row_lengths(
            np.concatenate(sequences), [len(s) for s in sequences]
        )

    bos = tf.constant([config["bos_id"]], tf.int32)

    def to_example(source, target):
        return source, tf.concat([bos, target[:-1]], axis=0), target

    def to_inputs(source, target_in, target_out):
        return {"source": source, "target": target_in}, target_out

    dataset = tf.data.Dataset.from_tensor_slices(
        (ragged([s for s, _ in pairs]), ragged([t for _, t in pairs]))
    )
    return (
        dataset.shuffle(len(pairs), seed=config["seed"], reshuffle_each_iteration=True)
        .repeat()
        .map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
        .padded_batch(
            config["batch_size"], padding_values=config["pad_id"], drop_remainder=True
        )
        .map(to_inputs)
        .prefetch(tf.data.AUTOTUNE)
    )


def ids_to_text(ids):
    """Word ids (EOS dropped) as a space-separated string: "523 17 88"."""
    return " ".join(str(int(i)) for i in ids[:-1])


def id_tokenize(strings):
    """`tf.string [N]` of space-separated ids -> ragged int32 `[N, None]`.

    The in-graph "tokenizer" for `make_dataset` on this pre-tokenized corpus
    (the peers do no tokenization; a SentencePiece model would add its own
    cost to ours alone).
    """
    import tensorflow as tf

    return tf.ragged.map_flat_values(
        tf.strings.to_number, tf.strings.split(strings), out_type=tf.int32
    )


def ours_dataset(pairs, batch_tokens=None, static_shapes=False, bucket_boundaries=None):
    """`keras_transformer.data.make_dataset` over the same corpus, endless.

    The pairs go in as strings of word ids without EOS; `make_dataset` adds
    EOS to the source and makes `target_in = BOS + y`, `target_out = y + EOS`:
    the peers' tensors, but padded to the bucket length (default boundaries)
    instead of the batch max. `batch_tokens`: batches of up to that many
    padded tokens per side instead of `batch_size` sentences.
    `static_shapes`: both sides padded to one bucket length
    (`bucket_by="longest"`), the XLA-friendly setting (few shapes).
    `bucket_boundaries`: as in `make_dataset`, or `"fine"` for
    `FINE_BOUNDARIES`.
    """
    from keras_transformer.data import FINE_BOUNDARIES
    from keras_transformer.data import make_dataset

    if bucket_boundaries == "fine":
        bucket_boundaries = FINE_BOUNDARIES
    return make_dataset(
        [(ids_to_text(s), ids_to_text(t)) for s, t in pairs],
        id_tokenize,
        id_tokenize,
        batch_size=None if batch_tokens else CONFIG["batch_size"],
        batch_tokens=batch_tokens,
        max_source_length=CONFIG["max_length"],
        max_target_length=CONFIG["max_length"],
        shuffle=True,
        seed=CONFIG["seed"],
        repeat=True,
        drop_remainder=True,
        bucket_by="longest" if static_shapes else "pair",
        bucket_boundaries=bucket_boundaries,
    )


def counting(dataset, pad_id=CONFIG["pad_id"]):
    """`(dataset, counter)`: the dataset adds each batch's real target tokens
    to the `tf.Variable` counter as it is produced.

    `fit` reads one batch ahead of an endless dataset, so the count of an
    epoch covers as many batches as it trained on, shifted by one.
    """
    import tensorflow as tf

    counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def count(inputs, target_out):
        real = tf.math.count_nonzero(tf.not_equal(target_out, pad_id), dtype=tf.int64)
        with tf.control_dependencies([counter.assign_add(real)]):
            return inputs, tf.identity(target_out)

    return dataset.map(count), counter


def epoch_timer(counter=None):
    """A Keras callback whose `epochs` lists, per epoch, `{"steps", "seconds"}`
    of its training batches (from the epoch's start to its validation, or to
    its end) and, given a `tf.Variable` `counter`, `"tokens"`: its growth.

    Also `variants.py`'s epoch timer.
    """
    import keras

    read = (lambda: int(counter.numpy())) if counter is not None else None

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.counted = read() if read else None
            self.start, self.steps, self.end = time.perf_counter(), 0, None

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_test_begin(self, logs=None):
            self.end = self.end or time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = self.end or time.perf_counter()
            self.epochs.append({"steps": self.steps, "seconds": end - self.start})
            if read:
                self.epochs[-1]["tokens"] = read() - self.counted

    return EpochTimer()


def fit_epochs(model, dataset, epochs, counter, steps):
    """`model.fit`s `epochs` epochs of `steps` batches of an endless dataset.

    Returns `(seconds, real target tokens)` per epoch, each epoch timed from
    its first step to its last by `epoch_timer` (not `fit`'s return: TF 2.21
    can block 5-10 s deleting a `tf.data` iterator while its autotuning
    thread winds down).
    """
    timer = epoch_timer(counter)
    model.fit(
        dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer]
    )
    return [e["seconds"] for e in timer.epochs], [e["tokens"] for e in timer.epochs]


def keras_stream(task, pairs):
    """The compiled model (`_keras_systems.build_for_training`) and counted
    stream of a Keras e2e `task["system"]`: `ours_data` (our buckets; `task`
    may set `batch_tokens`, `static_shapes`, `bucket_boundaries`),
    `ours_padded` (our model behind the peers' padded stream) or `keras_hub`."""
    import _keras_systems as ks

    if task["system"] == "ours_data":
        options = ("batch_tokens", "static_shapes", "bucket_boundaries")
        dataset = ours_dataset(pairs, **{k: task[k] for k in options if k in task})
    else:
        dataset = tf_padded_dataset(pairs)
    return ks.build_for_training(task), *counting(dataset)


def run_keras(task, pairs):
    """Trains a Keras system `task["epochs"]` epochs of `task["batches"]` steps."""
    model, dataset, counter = keras_stream(task, pairs)
    times, tokens = fit_epochs(model, dataset, task["epochs"], counter, task["batches"])
    return epoch_result(times, tokens, {"jit": task["jit"], "pairs": len(pairs)})


def run_torch(task, pairs):
    """torch: a `DataLoader` padding each batch to its max, epochs as passes."""
    import _torch_system as ts
    import torch

    ts.setup()
    loader = torch.utils.data.DataLoader(
        pairs,
        batch_size=CONFIG["batch_size"],
        shuffle=True,
        drop_last=True,
        collate_fn=pad_batch,
        num_workers=0,
        generator=torch.Generator().manual_seed(CONFIG["seed"]),
    )
    step = ts.make_train_step(ts.TorchTransformer())  # in training mode
    times, tokens = [], []
    for _ in range(task["epochs"]):
        start = time.perf_counter()
        tokens.append(0)
        for batch in loader:
            step(*ts.torch_batch(batch))
            tokens[-1] += count_tokens(batch["target_out"])
        times.append(time.perf_counter() - start)
    return epoch_result(times, tokens, {"pairs": len(pairs)})


def run(task):
    """The `e2e` task of `_worker.py`."""
    pairs = corpus(task["batches"])
    if task["system"] == "torch":
        return run_torch(task, pairs)
    return run_keras(task, pairs)
