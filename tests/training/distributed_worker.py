"""Run in a fresh process by `test_strategy.py`: 2 logical CPUs must be set
before TensorFlow initializes, so this cannot share the pytest process.

Usage: `python distributed_worker.py mirrored|mirrored_trainer|multiworker`. Prints one line
`RESULT <json>`. `mirrored` ends with `get_strategy("tpu")` in an environment
that claims a TPU (`TPU_ACCELERATOR_TYPE`) on a machine without one.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import tensorflow as tf  # noqa: E402

if sys.argv[1].startswith("mirrored"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_transformer.training import LabelSmoothedCrossEntropy  # noqa: E402
from keras_transformer.training import MaskedAccuracy  # noqa: E402
from keras_transformer.training import get_strategy  # noqa: E402

VOCAB, LENGTH, BATCH = 11, 6, 8


def data(length=LENGTH, batch=BATCH):
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, size=(4 * batch, length))
    y = rng.integers(1, VOCAB, size=(4 * batch, length))
    # Very uneven padding inside every global batch: the first half of each
    # batch keeps 1 token per row, the second half all `length`, so with the
    # defaults the two replicas hold 4 and 24 tokens.
    for start in range(0, len(y), batch):
        y[start : start + batch // 2, 1:] = 0
    return x, y


def build(initial=None):
    model = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 8),
            keras.layers.Dense(VOCAB),
        ]
    )
    if initial is not None:
        model.set_weights(initial)
    return model


def build_transformer(initial=None):
    from keras_transformer.models.transformer import Transformer

    model = Transformer(
        vocabulary_size=VOCAB,
        num_layers=1,
        d_model=16,
        num_heads=2,
        d_ff=32,
        dropout=0.0,  # replicas draw different dropout masks
    )
    ids = np.ones((1, LENGTH), "int32")
    model({"source": ids, "target": ids})
    if initial is not None:
        model.set_weights(initial)
    return model


def transformer_data(length=LENGTH, batch=BATCH):
    x, y = data(length, batch)
    target_in = np.concatenate([np.full((len(y), 1), 2), y[:, :-1]], axis=1)
    as_ids = lambda a: np.asarray(a, "int32")
    return {"source": as_ids(x), "target": as_ids(target_in)}, as_ids(y)


def run(
    strategy,
    loss,
    initial,
    builder=build,
    make_data=data,
    optimizer=None,
    batch_size=BATCH,
):
    x, y = make_data()
    with strategy.scope():
        model = builder(initial)
        model.compile(
            optimizer=optimizer() if optimizer else keras.optimizers.SGD(0.5),
            loss=loss,
            metrics=[MaskedAccuracy()],
            # XLA under MirroredStrategy on logical CPUs fails in TF 2.21
            # whatever the loss ("variable on a different device").
            jit_compile=False,
        )
    if isinstance(x, dict):
        # Plain `fit`: under 2 replicas Keras 3.15 would build the model from
        # the replicas' first batches averaged into float "ids"; the
        # Transformer builds from one replica's batch instead.
        batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        history = model.fit(batches, epochs=2, verbose=0)
    else:
        history = model.fit(
            x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0
        )
    return history.history, [np.asarray(w) for w in model.get_weights()]


def compare(a, b):
    (history_a, weights_a), (history_b, weights_b) = a, b
    return {
        "loss": float(
            np.max(np.abs(np.subtract(history_a["loss"], history_b["loss"])))
        ),
        "accuracy": float(
            np.max(
                np.abs(
                    np.subtract(
                        history_a["masked_accuracy"], history_b["masked_accuracy"]
                    )
                )
            )
        ),
        "weights": float(
            max(np.max(np.abs(u - v)) for u, v in zip(weights_a, weights_b))
        ),
    }


def mirrored():
    result = {}
    try:
        get_strategy("mirrored", devices=["/cpu:0", "/cpu:7"])
    except ValueError as error:
        result["unknown_device_error"] = str(error)
    strategy = get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    result["replicas"] = strategy.num_replicas_in_sync
    result["type"] = type(strategy).__name__
    keras.utils.set_random_seed(0)
    initial = build().get_weights()
    default = tf.distribute.get_strategy()
    ours = LabelSmoothedCrossEntropy(label_smoothing=0.1)
    single = run(default, ours, initial)
    result["ours"] = compare(single, run(strategy, ours, initial))
    # Keras's built-in masked loss averages the replicas' own token means.
    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=0
    )
    result["keras"] = compare(
        run(default, keras_loss, initial), run(strategy, keras_loss, initial)
    )
    # The Transformer itself. SGD, not the paper's Adam: the attention key
    # bias has an exactly zero gradient (q.(k + b) shifts every score of a
    # query by the same q.b), so its computed gradient is rounding noise
    # that depends on how the batch is split, and Adam (epsilon 1e-9)
    # normalizes that noise into full-size steps: 0.12 apart after 2 steps,
    # with the same losses. It changes no output.
    keras.utils.set_random_seed(0)
    initial = build_transformer().get_weights()
    kwargs = dict(
        builder=build_transformer,
        make_data=transformer_data,
        optimizer=lambda: keras.optimizers.SGD(0.1),
    )
    result["transformer"] = compare(
        run(default, ours, initial, **kwargs), run(strategy, ours, initial, **kwargs)
    )
    # Longer sentences, 8 x 80 = 640 target rows per replica: the feed-forward
    # networks compute only the real rows (a gather in graph mode), 8 of 640
    # on one replica and all 640 on the other.
    kwargs.update(make_data=lambda: transformer_data(80, 16), batch_size=16)
    result["transformer_long"] = compare(
        run(default, ours, initial, **kwargs), run(strategy, ours, initial, **kwargs)
    )
    # Last, as it connects the eager context to a (local) TPU cluster.
    os.environ["TPU_ACCELERATOR_TYPE"] = "v4-8"
    result["tpu"] = tpu()
    return result


def trainer(bleu_sentences=0, **settings):
    """`train_translator` end to end, with validation (uneven last batch).

    With `bleu_sentences`, the BLEU callback translates that many validation
    sentences (the bucketed XLA path, under the strategy); the result adds
    its hypotheses and those of the saved model translated again here on one
    device without XLA, with their char BLEU (the reference).
    """
    import tempfile

    import sacrebleu

    from keras_transformer import evaluation
    from keras_transformer.data import parse_spec
    from keras_transformer.export import Translator
    from keras_transformer.model_directory import load_model_and_vocabularies
    from keras_transformer.training.trainer import TrainConfig
    from keras_transformer.training.trainer import train_translator

    calls = []
    translate_all = evaluation.translate_all

    def recording(translator, sentences, **kwargs):
        translations = translate_all(translator, sentences, **kwargs)
        calls.append((list(sentences), translations))
        return translations

    evaluation.translate_all = recording  # what the BLEU callback calls
    with tempfile.TemporaryDirectory() as output:
        config = TrainConfig(
            train="demo:150",
            output=output,
            model_overrides={
                "num_layers": 1,
                "d_model": 16,
                "num_heads": 2,
                "d_ff": 32,
            },
            vocab_size=40,
            shared_vocabulary=False,
            epochs=1,
            batch_size=16,
            max_length=32,
            bleu_sentences=bleu_sentences,
            verbose=0,
            **settings,
        )
        metrics = train_translator(config)
        evaluation.translate_all = translate_all
        keys = ("strategy", "replicas", "steps", "valid_loss", "valid_bleu")
        result = {k: metrics[k] for k in keys}
        if calls:
            sources, hypotheses = calls[-1]
            references = [t for _, t in parse_spec("demo:150", "valid")]
            model, *tokenizers = load_model_and_vocabularies(output)
            translator = Translator(model, *tokenizers, beam_size=config.bleu_beam_size)
            expected = translate_all(translator, sources, xla=False)
            result["bleu"] = {
                "sources": len(sources),
                "hypotheses": hypotheses,
                "expected": expected,
                "expected_bleu": sacrebleu.corpus_bleu(
                    expected,
                    [references[: len(sources)]],
                    tokenize=config.bleu_tokenize,
                ).score,
            }
    return result


def tpu():
    """`get_strategy("tpu")` when the environment claims a TPU but has none."""
    import time

    start = time.monotonic()
    try:
        get_strategy("tpu")
    except RuntimeError as error:
        return {"error": str(error), "seconds": time.monotonic() - start}
    return {"error": None, "seconds": time.monotonic() - start}


def multiworker():
    strategy = get_strategy("multiworker")
    return {
        "replicas": strategy.num_replicas_in_sync,
        "type": type(strategy).__name__,
    }


if __name__ == "__main__":
    output = {
        "mirrored": mirrored,
        # Its own process: two MirroredStrategy objects in one process
        # share collective instance keys and abort each other's all-reduces.
        "mirrored_trainer": lambda: trainer(
            strategy="mirrored", devices=["/cpu:0", "/cpu:1"], bleu_sentences=8
        ),
        "multiworker": multiworker,
    }[sys.argv[1]]()
    print("RESULT " + json.dumps(output))
