import os
import uuid

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.training import average_checkpoints
from keras_transformer.training import checkpoint_step
from keras_transformer.training import latest_checkpoints
from keras_transformer.training.checkpoints import list_step_checkpoints


def tiny_model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]
    )
    model.compile(keras.optimizers.Adam(0.1), "mse")
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """3 weight states of one model, as `.weights.h5` and `.keras` files."""
    directory = tmp_path_factory.mktemp("checkpoints")
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    weights, keras_files, states = [], [], []
    for step in (1, 2, 3):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        weights.append(str(directory / f"ckpt-{step}.weights.h5"))
        keras_files.append(str(directory / f"ckpt-{step}.keras"))
        model.save_weights(weights[-1])
        model.save(keras_files[-1])
        states.append([np.array(w) for w in model.get_weights()])
    return {"weights": weights, "keras": keras_files, "states": states, "x": x}


def mean_state(states):
    return [np.mean(group, axis=0, dtype=np.float64) for group in zip(*states)]


def datasets(path):
    values = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: (
                values.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return values


def test_average_equals_numpy_mean(saved, tmp_path):
    output = str(tmp_path / "average.weights.h5")
    averaged = average_checkpoints(saved["weights"], output)
    files = [datasets(path) for path in saved["weights"]]
    assert averaged.keys() == files[0].keys()
    for name, value in averaged.items():
        if np.issubdtype(value.dtype, np.floating):
            mean = np.mean([f[name] for f in files], axis=0, dtype=np.float64)
            np.testing.assert_allclose(value, mean.astype(value.dtype), atol=1e-7)
        else:  # optimizer iterations: from the last checkpoint
            np.testing.assert_array_equal(value, files[-1][name])
    assert datasets(output).keys() == averaged.keys()
    assert int(averaged["optimizer/vars/0"]) == 6  # 3 fits x 2 steps

    # `load_weights` accepts the output; the model's weights are the mean.
    model = tiny_model()
    model.load_weights(output)
    expected = mean_state(saved["states"])
    for weight, mean in zip(model.get_weights(), expected):
        np.testing.assert_allclose(weight, mean, atol=1e-6)


def test_keras_files_and_model_argument(saved, tmp_path):
    output = str(tmp_path / "average.keras")
    model = tiny_model()
    average_checkpoints(
        [saved["weights"][0], saved["keras"][1], saved["keras"][2]],
        output,
        model=model,
    )
    restored = keras.saving.load_model(output)
    expected = mean_state(saved["states"])
    for loaded, weight, mean in zip(
        model.get_weights(), restored.get_weights(), expected
    ):
        np.testing.assert_allclose(loaded, mean, atol=1e-6)
        np.testing.assert_allclose(weight, mean, atol=1e-6)
    # Without output_path the average is only loaded into the model.
    model = tiny_model()
    average_checkpoints(saved["keras"][:2], model=model)
    for weight, a, b in zip(model.get_weights(), *saved["states"][:2]):
        np.testing.assert_allclose(weight, (a + b) / 2, atol=1e-6)


def test_one_checkpoint_is_itself(saved, tmp_path):
    output = str(tmp_path / "same.weights.h5")
    average_checkpoints(saved["weights"][-1:], output)
    before, after = datasets(saved["weights"][-1]), datasets(output)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


@pytest.mark.parametrize("content", [b"0", b"\x89HDF\r\n\x1a\n garbage" * 10])
def test_corrupted_checkpoint_is_named(saved, tmp_path, content):
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match="broken.weights.h5.*corrupted"):
        average_checkpoints([saved["weights"][0], str(broken)])
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(open(saved["keras"][0], "rb").read()[:200])
    with pytest.raises(ValueError, match="truncated.keras.*corrupted"):
        average_checkpoints([str(truncated)])


def test_missing_or_mismatched_checkpoints(saved, tmp_path):
    missing = str(tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match="not found.*missing.weights.h5"):
        average_checkpoints([saved["weights"][0], missing])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    other_path = str(tmp_path / "other.weights.h5")
    other.save_weights(other_path)
    with pytest.raises(ValueError, match="other.weights.h5"):
        average_checkpoints([saved["weights"][0], other_path])
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])
    with pytest.raises(ValueError, match=r"\.weights\.h5.*\.keras"):
        average_checkpoints([str(tmp_path / "model.ckpt")])
    with pytest.raises(ValueError, match="needs a `.keras` input"):
        average_checkpoints(saved["weights"], str(tmp_path / "out.keras"))


def test_latest_checkpoints_by_step_number(tmp_path):
    for step in (1, 2, 9, 10, 11):
        (tmp_path / f"epoch-{step:d}.weights.h5").write_bytes(b"")
    (tmp_path / "best.weights.h5").write_bytes(b"")  # no step: skipped
    (tmp_path / "epoch-12.keras").write_bytes(b"")  # other pattern
    names = [os.path.basename(p) for p in latest_checkpoints(str(tmp_path), 3)]
    assert names == ["epoch-9.weights.h5", "epoch-10.weights.h5", "epoch-11.weights.h5"]
    assert len(latest_checkpoints(str(tmp_path), 50)) == 5
    assert latest_checkpoints(str(tmp_path), 1, pattern="*.keras")[0].endswith(
        "epoch-12.keras"
    )
    assert checkpoint_step("run3/ckpt-004000.weights.h5") == 4000
    assert checkpoint_step("model.h5") is None
    with pytest.raises(ValueError, match="No checkpoint matching"):
        latest_checkpoints(str(tmp_path), 2, pattern="*.ckpt")
    with pytest.raises(ValueError, match="k=0"):
        latest_checkpoints(str(tmp_path), 0)
    with pytest.raises(ValueError, match="not found"):
        latest_checkpoints(str(tmp_path / "nowhere"), 2)


def test_list_step_checkpoints_orders_by_step_and_skips_unnumbered(tmp_path):
    for step in (10, 9, 1):
        (tmp_path / f"epoch-{step}.weights.h5").write_bytes(b"")
    (tmp_path / "best.weights.h5").write_bytes(b"")  # no step: skipped
    (tmp_path / ".epoch-12.weights.h5").write_bytes(b"")  # hidden: skipped
    (tmp_path / "epoch-13.keras").write_bytes(b"")  # other pattern
    (tmp_path / "epoch-14.weights.h5").mkdir()  # a directory: skipped
    listed = list_step_checkpoints(tmp_path)
    assert [step for step, _ in listed] == [1, 9, 10]  # not name order
    assert [os.path.basename(path) for _, path in listed] == [
        "epoch-1.weights.h5",
        "epoch-9.weights.h5",
        "epoch-10.weights.h5",
    ]
    assert listed[0][1] == os.path.join(str(tmp_path), "epoch-1.weights.h5")
    assert list_step_checkpoints(str(tmp_path), "*.keras") == [
        (13, os.path.join(str(tmp_path), "epoch-13.keras"))
    ]


def test_list_step_checkpoints_of_a_missing_or_empty_directory(tmp_path):
    assert list_step_checkpoints(tmp_path / "nowhere") == []
    assert list_step_checkpoints(tmp_path) == []
    (tmp_path / "notes.txt").write_text("")
    assert list_step_checkpoints(tmp_path / "notes.txt") == []


def test_list_step_checkpoints_on_a_gfile_file_system():
    # `ram://` stands in for `gs://`: the listing goes through tf.io.gfile.
    directory = f"ram://checkpoints-{uuid.uuid4().hex}/run"
    assert list_step_checkpoints(directory) == []
    tf.io.gfile.makedirs(directory)
    assert list_step_checkpoints(directory) == []
    for name in ("ckpt-10.weights.h5", "ckpt-9.weights.h5", "ckpt.weights.h5"):
        with tf.io.gfile.GFile(f"{directory}/{name}", "wb") as f:
            f.write(b"")
    assert list_step_checkpoints(directory, "ckpt-*.weights.h5") == [
        (9, f"{directory}/ckpt-9.weights.h5"),
        (10, f"{directory}/ckpt-10.weights.h5"),
    ]
    assert latest_checkpoints(directory, 1) == [f"{directory}/ckpt-10.weights.h5"]


def test_model_checkpoint_files_average(tmp_path):
    # What the trainer writes: ModelCheckpoint("epoch-{epoch:03d}.weights.h5").
    keras.utils.set_random_seed(0)
    model = tiny_model()
    states = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: states.append(model.get_weights())
    )
    pattern = str(tmp_path / "epoch-{epoch:03d}.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(pattern, save_weights_only=True)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=4, callbacks=[checkpoint, record], verbose=0)
    paths = latest_checkpoints(str(tmp_path), 2)
    assert [os.path.basename(p) for p in paths] == [
        "epoch-003.weights.h5",
        "epoch-004.weights.h5",
    ]
    averaged_model = tiny_model()
    average_checkpoints(paths, model=averaged_model)
    for weight, a, b in zip(averaged_model.get_weights(), states[2], states[3]):
        np.testing.assert_allclose(weight, (a + b) / 2, atol=1e-6)
