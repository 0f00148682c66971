"""The shared layer-test helper: one checklist run on every public layer.

`run_layer_test` checks, in order:

1. config round trip: `from_config(get_config())` gives the same config, and
   `serialize_keras_object`/`deserialize_keras_object` round-trips via JSON;
2. an eager call: output shapes, exact weight counts (trainable,
   non-trainable, seed generators);
3. a symbolic call on `keras.Input`s: same output shapes and dtypes;
4. one `fit` step of a model wrapping the layer (XLA on): finite loss and
   changed trainable weights;
5. mixed precision (`mixed_float16`, `mixed_bfloat16`): finite outputs,
   float32 variables, outputs in the compute dtype unless declared float32.
"""

import json

import keras
import numpy as np
from keras import ops


def _flatten(outputs):
    return [x for x in keras.tree.flatten(outputs) if x is not None]


class _SumLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return ops.mean(ops.square(ops.cast(y_pred, "float32")))


def _symbolic_inputs(input_data):
    return {
        name: keras.Input(
            shape=np.shape(value)[1:],
            batch_size=np.shape(value)[0],
            dtype=str(np.asarray(value).dtype),
            name=name,
        )
        for name, value in input_data.items()
    }


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    expected_num_seed_generators=0,
    call_kwargs=None,
    float32_outputs=(),
    run_training_check=True,
    run_mixed_precision_check=True,
):
    """Runs the checklist above on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: dict `{call argument name: numpy array}` of tensor inputs.
        expected_output_shape: a shape, or a nested structure of shapes
            matching the layer's outputs.
        expected_num_trainable_weights: int.
        expected_num_non_trainable_weights: int.
        expected_num_seed_generators: int.
        call_kwargs: dict of non-tensor call arguments.
        float32_outputs: indices (in flattened output order) of outputs that
            stay float32 under mixed precision (attention weights, positional
            encodings, logits).
        run_training_check: bool.
        run_mixed_precision_check: bool.
    """
    call_kwargs = call_kwargs or {}

    # 1. Config round trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    serialized = json.loads(json.dumps(serialized))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # 2. Eager call, shapes and weight counts.
    outputs = layer(**input_data, **call_kwargs)
    flat_outputs = _flatten(outputs)
    expected_shapes = _shapes(expected_output_shape)
    assert [tuple(x.shape) for x in flat_outputs] == expected_shapes, (
        [tuple(x.shape) for x in flat_outputs],
        expected_shapes,
    )
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    seed_generators = [
        lyr
        for lyr in layer._flatten_layers(include_self=True)
        for _ in getattr(lyr, "_seed_generators", [])
    ]
    assert len(seed_generators) == expected_num_seed_generators
    for x in flat_outputs:
        assert np.all(np.isfinite(np.asarray(ops.cast(x, "float32"))))

    # 3. Symbolic call.
    symbolic_layer = layer_cls.from_config(config)
    inputs = _symbolic_inputs(input_data)
    symbolic_outputs = symbolic_layer(**inputs, **call_kwargs)
    flat_symbolic = _flatten(symbolic_outputs)
    assert [tuple(x.shape) for x in flat_symbolic] == expected_shapes
    for eager, symbolic in zip(flat_outputs, flat_symbolic, strict=True):
        assert _dtype(eager) == _dtype(symbolic)

    # 4. One fit step.
    if run_training_check and expected_num_trainable_weights:
        model = keras.Model(inputs, flat_symbolic[0])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_SumLoss())
        before = [np.array(w) for w in model.trainable_weights]
        target = np.zeros(flat_symbolic[0].shape, "float32")
        history = model.fit(input_data, target, epochs=1, batch_size=None, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [np.array(w) for w in model.trainable_weights]
        assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))

    # 5. Mixed precision.
    if run_mixed_precision_check:
        for policy in ("mixed_float16", "mixed_bfloat16"):
            mixed = layer_cls(**{**init_kwargs, "dtype": policy})
            mixed_outputs = _flatten(mixed(**input_data, **call_kwargs))
            for index, x in enumerate(mixed_outputs):
                if "float" not in _dtype(x):
                    continue
                expected = (
                    "float32" if index in float32_outputs else mixed.compute_dtype
                )
                assert _dtype(x) == expected, (policy, index, x.dtype)
                assert np.all(np.isfinite(np.asarray(ops.cast(x, "float32"))))
            for weight in mixed.weights:
                if "float" in _dtype(weight):
                    assert _dtype(weight) == "float32"
    return layer, outputs


def _shapes(structure):
    """Flattens a nested structure of shape tuples into a list of tuples."""
    if isinstance(structure, tuple) and all(
        isinstance(d, int) or d is None for d in structure
    ):
        return [structure]
    if isinstance(structure, dict):
        structure = [structure[k] for k in sorted(structure)]
    return [shape for item in structure for shape in _shapes(item)]


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)
