"""Run by `test_compile_count.py` in a fresh process: `XLA_FLAGS` must be set
before TensorFlow starts. Usage: `python compile_count_worker.py DUMP_DIR`.

Trains a tiny Transformer with `jit_compile=True` for two epochs (two `fit`
calls) on the length-bucketed pipeline and prints `RESULT <json>` with the
distinct batch shapes of the data and the bucket shapes the pipeline allows.
XLA writes one `*.before_optimizations.txt` per compilation into DUMP_DIR.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    f"--xla_dump_to={sys.argv[1]} --xla_dump_hlo_as_text --xla_dump_hlo_pass_re=^$"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_transformer import data  # noqa: E402
from keras_transformer.models.transformer import Transformer  # noqa: E402
from keras_transformer.training import LabelSmoothedCrossEntropy  # noqa: E402
from keras_transformer.training.resume import fit_by_epoch  # noqa: E402

MAX_LENGTH, BATCH = 64, 16


def tokenize(sentences):
    # One id per character: lengths follow the sentences.
    return tf.strings.unicode_decode(sentences, "UTF-8") % 20 + 4


def main():
    keras.utils.set_random_seed(0)
    pairs = [
        (" ".join(["a"] * (1 + i % 23)), " ".join(["b"] * (1 + (i * 7) % 29)))
        for i in range(300)
    ]
    dataset = data.make_dataset(
        pairs,
        tokenize,
        tokenize,
        batch_size=BATCH,
        max_source_length=MAX_LENGTH,
        max_target_length=MAX_LENGTH,
        shuffle=False,
    )
    shapes = sorted(
        {(tuple(x["source"].shape), tuple(x["target"].shape)) for x, _ in dataset}
    )
    model = Transformer(
        vocabulary_size=32, num_layers=1, d_model=16, num_heads=2, d_ff=32
    )
    model.compile(optimizer="adam", loss=LabelSmoothedCrossEntropy(), jit_compile=True)
    fit_by_epoch(model, dataset, epochs=2, verbose=0)
    allowed = data.bucket_shapes(
        batch_size=BATCH, max_source_length=MAX_LENGTH, max_target_length=MAX_LENGTH
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "shapes": shapes,
                "allowed": [list(s) for s in allowed],
                "traces": model.train_function.experimental_get_tracing_count()
                if hasattr(model.train_function, "experimental_get_tracing_count")
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
