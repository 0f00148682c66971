"""Writing the translator as a versioned SavedModel for TF Serving."""

import os
import shutil

import tensorflow as tf

# At most 1000 records are read by TF Serving from this file.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_WARMUP_SENTENCES = ("", "one", "two hundred and five")


def version_directories(export_dir):
    """The numbered version sub-directories of `export_dir`, as ints, sorted.

    Args:
        export_dir: a model base path (missing: no versions).

    Returns:
        list of int.
    """
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def next_version(export_dir):
    """One more than the highest version in `export_dir` (1 if none)."""
    versions = version_directories(export_dir)
    return versions[-1] + 1 if versions else 1


def export_translator(translator, export_dir, version=None, warmup_sentences=None):
    """Saves `translator` to `export_dir/<version>/` with explicit signatures.

    Signatures: `serving_default` (beam search with the translator's beam
    size) and `translate_greedy`, each taking `sentences` (tf.string `[None]`)
    and returning `translations` (tf.string `[None]`) and `scores` (float32
    `[None]`). Also writes `assets.extra/tf_serving_warmup_requests`, so TF
    Serving warms the model up before it serves.

    An existing version is never overwritten. Without `version`, the next
    number is used (TF Serving's convention: `export_dir/1`, then `/2`, ...,
    and TF Serving serves the highest). The SavedModel is written to a
    temporary sibling directory first and renamed into place when complete,
    so a server watching `export_dir` never loads half a version.

    Args:
        translator: a `keras_transformer.export.Translator`.
        export_dir: the model base path TF Serving watches.
        version: optional positive int, the version sub-directory; it must
            not exist yet. Defaults to the next version number.
        warmup_sentences: strings for the warmup requests (default: a few
            short ones, the empty string included).

    Returns:
        The path of the written version directory.

    Raises:
        ValueError: if `version` is not a positive integer.
        FileExistsError: if `export_dir/<version>` exists.
    """
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise ValueError(f"`version` must be a positive integer. Received: {version}")
    export_dir = os.fspath(export_dir)
    if version is None:
        version = next_version(export_dir)
    path = os.path.join(export_dir, str(version))
    if os.path.exists(path):
        raise FileExistsError(
            f"Version {version} already exists: {path} (export without a "
            f"version to write the next one, {next_version(export_dir)})."
        )
    # Not a number, so TF Serving ignores it until the rename.
    staging = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    try:
        tf.saved_model.save(translator, staging, signatures=translator.signatures())
        write_warmup_requests(staging, warmup_sentences or DEFAULT_WARMUP_SENTENCES)
        os.rename(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return path


def write_warmup_requests(saved_model_dir, sentences, model_name="translator"):
    """Writes TF Serving warmup requests (one per signature) for `sentences`."""
    from tensorflow_serving.apis import model_pb2
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in ("serving_default", "translate_greedy"):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=signature
                )
            )
            request.inputs["sentences"].CopyFrom(
                tf.make_tensor_proto(list(sentences), dtype=tf.string)
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
