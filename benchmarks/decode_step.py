"""Cost of one decoding step of the exported (non-XLA) beam search.

The search `serving_default` runs, on a model shaped like the `tiny` preset
with an 8,000-word vocabulary (random weights, seeded), outside XLA as an
exported SavedModel runs it: `max_length` is a tensor (source length + 50),
the batch size is dynamic. Random weights rarely produce EOS, so every
search runs its 70 steps over 20-token sources: the time per call divided
by 70 is the cost of a step, averaged over cache lengths 1..70.

Prints milliseconds per step at batch 1 and 64 (beam 4), and with
`--profile` the op time per step by op type (TensorFlow profiler, one
traced call). Run it twice with `TF_ENABLE_ONEDNN_OPTS=0` / `=1` to see
what TensorFlow's oneDNN kernels cost at batch 1.

Usage:

    python benchmarks/decode_step.py [--batch-sizes 1,64] [--profile]
"""

import argparse
import collections
import glob
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SOURCE_LENGTH = 20
EXTRA_LENGTH = 50
VOCABULARY = 8000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args(argv)


def build_search():
    """The tiny-preset model and its non-XLA beam search, as exported."""
    import keras
    import tensorflow as tf

    from keras_transformer import Transformer
    from keras_transformer.decoding.beam import beam_search

    keras.utils.set_random_seed(1)
    model = Transformer.from_preset("tiny", vocabulary_size=VOCABULARY)
    model.build()

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False
    )
    def search(source_ids):
        max_length = tf.shape(source_ids)[1] + EXTRA_LENGTH
        return beam_search(model, source_ids, max_length, beam_size=4, alpha=0.6)

    return search


def time_steps(search, batch_size, repeats):
    """(milliseconds per call, steps per call) at `batch_size`."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    source = tf.constant(
        rng.integers(4, VOCABULARY, (batch_size, SOURCE_LENGTH)), tf.int32
    )
    ids = search(source)["ids"].numpy()
    steps = int(np.max(np.sum(ids[:, 0] != 0, axis=-1)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(source)["ids"].numpy()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), steps, source


def profile_by_type(search, source, steps):
    """Op milliseconds per step by op type, from one traced call."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        search(source)["ids"].numpy()
        tf.profiler.experimental.stop()
        path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
        space = xplane_pb2.XSpace.FromString(open(path, "rb").read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                op_type = name.rsplit(":", 1)[-1]
                if ":" in name and op_type != "Process":  # ops, not executor events
                    totals[op_type] += event.duration_ps / 1e9
                    counts[op_type] += 1
    total = sum(totals.values())
    print(f"  kernel time {total / steps:.2f} ms per step (2 threads); by type:")
    for op_type, ms in totals.most_common(10):
        print(f"    {op_type:24s} {ms / steps:6.3f} ms/step "
              f"{100 * ms / total:4.1f}%  ({counts[op_type] / steps:.1f} runs)")  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    search = build_search()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    print(f"tiny preset, vocabulary {VOCABULARY}, beam 4, {SOURCE_LENGTH}-token "
          f"sources; TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={onednn}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for batch_size in map(int, args.batch_sizes.split(",")):
        ms, steps, source = time_steps(search, batch_size, args.repeats)
        print(f"batch {batch_size}: {ms:.1f} ms per call, {steps} steps, "
              f"{ms / steps:.3f} ms per step")  # fmt: skip
        if args.profile:
            profile_by_type(search, source, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
