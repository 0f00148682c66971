"""Building a model under a multi-replica strategy from one replica's batch."""

import tensorflow as tf
from keras import tree


def symbolic_build_from_one_replica(model, iterator):
    """Builds `model` for `fit`/`evaluate` from one replica's first batch.

    Keras 3.15's TensorFlow trainer (`_maybe_symbolic_build`) averages the
    replicas' first batches with `strategy.reduce("MEAN")` to get the shapes
    to build from, on every `fit` and `evaluate` call: integer token ids
    become floats, and replicas holding batches of different sizes (the last,
    partial validation batch split 2 + 1) fail with `AddN ... must have the
    same size and shape`. Only shapes and dtypes matter there, so this takes
    the first replica's batch as it is. `Transformer` calls it in its
    `_maybe_symbolic_build` override.

    Args:
        model: the Keras model, with its distribution strategy.
        iterator: Keras's epoch iterator (yields `(begin, end, iterator)`).
    """
    # The conditions of Keras's `_symbolic_build`: when nothing is left to
    # build (e.g. after the training package's `build_training_state`), do not pull a
    # batch (a new iterator: shuffle buffer, resume skip) on every call.
    unbuilt = lambda obj: obj is not None and not obj.built
    if not (
        any(not layer.built for layer in model._flatten_layers())
        or unbuilt(getattr(model, "_compile_metrics", None))
        or unbuilt(getattr(model, "_compile_loss", None))
    ):
        return
    strategy = model.distribute_strategy
    for _, _, data_iterator in iterator:
        batch = next(data_iterator)
        break
    else:
        return

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    with strategy.scope():
        model._symbolic_build(data_batch=tree.map_structure(first, batch))
