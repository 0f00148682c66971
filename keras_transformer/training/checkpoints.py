"""Checkpoint averaging (paper section 6.1) over Keras weight files.

The base models of the paper are the average of the last 5 checkpoints, the big
ones of the last 20. `latest_checkpoints` picks them by step number and
`average_checkpoints` averages them. `list_step_checkpoints` is the one listing
of step-numbered checkpoint files that the library and the examples share.
"""

import fnmatch
import io
import os
import re
import shutil
import tempfile
import zipfile

import h5py
import numpy as np

# The weights inside a `.keras` archive.
KERAS_WEIGHTS_MEMBER = "model.weights.h5"
_SUFFIXES = (".weights.h5", ".keras", ".h5")


def _kind(path):
    name = os.fspath(path)
    if name.endswith(".keras"):
        return "keras"
    if name.endswith(".h5"):
        return "h5"
    raise ValueError(
        "Checkpoints must be `.weights.h5` files (`model.save_weights`) or "
        f"`.keras` files (`model.save`). Received: {name!r}"
    )


def _h5_source(path):
    """A path or in-memory file that `h5py.File` opens, for either format."""
    if _kind(path) == "h5":
        return path
    with zipfile.ZipFile(path) as archive:
        if KERAS_WEIGHTS_MEMBER not in archive.namelist():
            raise ValueError(
                f"{path!r} has no {KERAS_WEIGHTS_MEMBER!r} member "
                f"(members: {archive.namelist()}); sharded weights are not "
                "supported."
            )
        return io.BytesIO(archive.read(KERAS_WEIGHTS_MEMBER))


def _unreadable(path, error):
    return ValueError(
        f"Cannot read checkpoint {path!r}; it is corrupted or not a Keras "
        f"weights file ({type(error).__name__}: {error})."
    )


def read_checkpoint_arrays(path):
    """Reads every array of a Keras weights file into memory.

    Reading all of them is also a check that the file is complete: a
    truncated or corrupted file fails here, before any model is touched.

    Args:
        path: a local `.weights.h5` file (`model.save_weights`) or `.keras`
            file (`model.save`).

    Returns:
        A dict `{dataset path in the HDF5 file: numpy array}`.

    Raises:
        ValueError: when the file is missing, cannot be read, or holds no
            weights.
    """
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file not found: {path!r}")
    try:
        source = _h5_source(path)
    except ValueError:
        raise
    except Exception as error:  # BadZipFile, zlib.error, OSError...
        raise _unreadable(path, error) from error
    values = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            values[name] = np.asarray(item[()])

    try:
        with h5py.File(source, "r") as file:
            file.visititems(visit)
    except Exception as error:  # h5py raises OSError, KeyError, ValueError...
        raise _unreadable(path, error) from error
    if not values:
        raise ValueError(f"Checkpoint {path!r} holds no weights.")
    return values


def _is_float(array):
    return np.issubdtype(array.dtype, np.floating)


def _check_same_structure(reference, values, reference_path, path):
    if reference.keys() != values.keys():
        extra = sorted(values.keys() - reference.keys())
        lacking = sorted(reference.keys() - values.keys())
        raise ValueError(
            f"Checkpoint {path!r} does not have the variables of {reference_path!r}: "
            f"it has extra {extra[:5]} and lacks {lacking[:5]}."
        )
    for name, array in values.items():
        expected = reference[name]
        if array.shape != expected.shape or array.dtype != expected.dtype:
            raise ValueError(
                f"Variable {name!r} of checkpoint {path!r} has shape {array.shape} "
                f"and dtype {array.dtype}, but {expected.shape} and "
                f"{expected.dtype} in {reference_path!r}."
            )


def _write_h5(template, averaged, output_path):
    """Writes `template`'s weights file with `averaged` datasets, atomically."""
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".h5", dir=directory)
    os.close(handle)
    try:
        if _kind(template) == "h5":
            shutil.copyfile(template, temporary)
        else:
            with zipfile.ZipFile(template) as archive, open(temporary, "wb") as out:
                out.write(archive.read(KERAS_WEIGHTS_MEMBER))
        os.chmod(temporary, 0o644)
        with h5py.File(temporary, "r+") as file:
            for name, array in averaged.items():
                file[name][()] = array
        if _kind(output_path) == "keras":
            _write_keras(template, temporary, output_path)
        else:
            os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_keras(template, weights_file, output_path):
    """A copy of the `.keras` archive `template` with `weights_file` inside."""
    handle, temporary = tempfile.mkstemp(
        suffix=".keras", dir=os.path.dirname(os.path.abspath(output_path))
    )
    os.close(handle)
    try:
        with (
            zipfile.ZipFile(template) as source,
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target,
        ):
            for member in source.infolist():
                if member.filename == KERAS_WEIGHTS_MEMBER:
                    target.write(weights_file, KERAS_WEIGHTS_MEMBER)
                else:
                    target.writestr(member, source.read(member.filename))
        os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def average_checkpoints(paths, output_path=None, model=None):
    """Averages the weights of several Keras checkpoints.

    Every floating-point variable is the arithmetic mean of its values in the
    `k` checkpoints (accumulated in float64, stored in its own dtype). That
    includes float optimizer slots (Adam moments) when the files hold them.
    Non-float variables (the optimizer's `iterations` counter, seed-generator
    states) are taken from the last checkpoint of `paths`, which should be
    the newest. All checkpoints must hold the same variables (names, shapes
    and dtypes), i.e. come from the same model.

    Two formats are read, in any mix: `.weights.h5` files written by
    `model.save_weights` and `.keras` archives written by `model.save` (their
    `model.weights.h5` member). The output has the same HDF5 structure, so
    `model.load_weights` accepts it: a `.weights.h5` output is the last
    checkpoint's weights file with averaged values; a `.keras` output is the
    last `.keras` input with its weights replaced (config and metadata kept),
    and needs at least one `.keras` input.

    Args:
        paths: list of str, the checkpoints, oldest first.
        output_path: str or `None`, where to write the average (`.weights.h5`
            or `.keras`); written atomically, so it may be one of `paths`.
            Defaults to `None` (nothing written).
        model: a built `keras.Model` or `None`; when given, the average is
            loaded into it with `model.load_weights`. Defaults to `None`.

    Returns:
        A dict mapping each HDF5 dataset path of the checkpoints (e.g.
        `"layers/dense/vars/0"`) to its averaged numpy array.

    Raises:
        ValueError: if `paths` is empty, a file is missing, corrupted or of
            another format, or the checkpoints hold different variables.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_transformer.training import average_checkpoints, latest_checkpoints

    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    save = keras.callbacks.ModelCheckpoint(
        "runs/checkpoints/epoch-{epoch:02d}.weights.h5", save_weights_only=True
    )
    model.fit(x, y, epochs=8, callbacks=[save], verbose=0)

    paths = latest_checkpoints("runs/checkpoints", k=5)  # epochs 4 to 8
    average_checkpoints(paths, "runs/averaged.weights.h5", model=model)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 6.1.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise ValueError(f"`paths` must be a list of files. Received: {paths!r}")
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("`paths` must name at least one checkpoint. Received: []")
    for path in paths:
        _kind(path)
    if output_path is not None:
        output_path = os.fspath(output_path)
        if _kind(output_path) == "keras" and not any(
            _kind(path) == "keras" for path in paths
        ):
            raise ValueError(
                "A `.keras` output needs a `.keras` input to copy the model "
                f"config from. Received: paths={paths}, output_path={output_path!r}"
            )

    reference = read_checkpoint_arrays(paths[0])
    totals = {
        name: array.astype(np.float64)
        for name, array in reference.items()
        if _is_float(array)
    }
    last = reference
    for path in paths[1:]:
        values = read_checkpoint_arrays(path)
        _check_same_structure(reference, values, paths[0], path)
        for name in totals:
            totals[name] += values[name]
        last = values
    averaged = {
        name: (totals[name] / len(paths)).astype(array.dtype)
        if name in totals
        else array
        for name, array in last.items()
    }

    if output_path is not None:
        keras_inputs = [path for path in paths if _kind(path) == "keras"]
        template = keras_inputs[-1] if _kind(output_path) == "keras" else paths[-1]
        _write_h5(template, averaged, output_path)
    if model is not None:
        if output_path is not None:
            model.load_weights(output_path)
        else:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "average.weights.h5")
                _write_h5(paths[-1], averaged, path)
                model.load_weights(path)
    return averaged


def checkpoint_step(path):
    """The step number of a checkpoint file name, or `None`.

    The last integer of the file name once the `.weights.h5`, `.keras` or
    `.h5` extension is removed: `epoch-012.weights.h5` -> 12,
    `ckpt-4000.keras` -> 4000.
    """
    name = os.path.basename(os.fspath(path))
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else None


def list_step_checkpoints(directory, pattern="*.weights.h5"):
    """The step-numbered checkpoint files of a directory, oldest first.

    Files of `directory` whose name matches the glob `pattern` are ordered by
    `checkpoint_step` (the last integer of the name, so `epoch-10` comes after
    `epoch-9`); files whose name has no number, hidden files (as `glob`
    does) and subdirectories are skipped. The listing goes through
    `tf.io.gfile`, so `directory` may be local or any path TensorFlow reads
    (`gs://bucket/...`).

    Args:
        directory: str or path-like, the checkpoint directory.
        pattern: str, glob pattern of checkpoint file names (not paths).
            Defaults to `"*.weights.h5"`.

    Returns:
        A list of `(step, path)` pairs, oldest first; `[]` when `directory`
        does not exist or holds no matching file with a step number.

    Example:

    ```python
    for step, path in list_step_checkpoints("gs://bucket/run/checkpoints"):
        print(step, path)
    ```
    """
    import tensorflow as tf

    directory = os.fspath(directory)
    if not tf.io.gfile.isdir(directory):
        return []
    found = []
    for name in tf.io.gfile.listdir(directory):
        step = checkpoint_step(name)
        hidden = name.startswith(".") and not pattern.startswith(".")
        if step is None or hidden or not fnmatch.fnmatchcase(name, pattern):
            continue
        path = os.path.join(directory, name)
        if not tf.io.gfile.isdir(path):
            found.append((step, path))
    return sorted(found)


def latest_checkpoints(directory, k, pattern="*.weights.h5"):
    """The last `k` checkpoints of a directory, ordered by step number.

    Files matching the glob `pattern` are ordered by `checkpoint_step` (the
    last integer of the name, so `epoch-10` comes after `epoch-9`); files
    whose name has no number are skipped. The listing is
    `list_step_checkpoints`'s.

    Args:
        directory: str, the checkpoint directory.
        k: int >= 1, how many to return.
        pattern: str, glob pattern of checkpoint file names. Defaults to
            `"*.weights.h5"` (what `ModelCheckpoint(save_weights_only=True)`
            writes with a `.weights.h5` file path).

    Returns:
        A list of at most `k` paths, oldest first (newest last, as
        `average_checkpoints` expects). Fewer than `k` when fewer exist.

    Raises:
        ValueError: if `k < 1`, `directory` does not exist, or no file with a
            step number matches.
    """
    import tensorflow as tf

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1. Received: k={k!r}")
    if not tf.io.gfile.isdir(os.fspath(directory)):
        raise ValueError(f"Checkpoint directory not found: {directory!r}")
    found = list_step_checkpoints(directory, pattern)
    if not found:
        raise ValueError(
            f"No checkpoint matching {pattern!r} with a step number in its "
            f"name in {directory!r}."
        )
    return [path for _, path in found[-k:]]
