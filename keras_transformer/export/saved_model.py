"""Writing the translator as a versioned SavedModel for TF Serving."""

import os
import shutil

import tensorflow as tf

# At most 1000 records are read by TF Serving from this file.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The same requests plus one per XLA signature and bucket. Not read by TF
# Serving under this name: a server without `--xla_cpu_compilation_enabled`
# fails XLA requests, and a failed warm-up request fails the model's load.
XLA_WARMUP_FILE = WARMUP_FILE + "_xla"
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


def export_translator(
    translator, export_dir, version=None, warmup_sentences=None, xla_warmup=False
):
    """Saves `translator` to `export_dir/<version>/` with explicit signatures.

    Signatures: `serving_default` (beam search with the translator's beam
    size) and `translate_greedy`, each taking `sentences` (tf.string `[None]`)
    and returning `translations` (tf.string `[None]`) and `scores` (float32
    `[None]`); and, for a `Translator`, the same searches compiled with XLA
    on bucketed shapes, `translate_xla` (not for a sampling translator) and
    `translate_greedy_xla` (see `Translator.translate_fast`). Also writes
    `assets.extra/tf_serving_warmup_requests`, so TF Serving warms the model
    up before it serves: one request per signature without XLA. The XLA
    signatures' warm-up, one request per signature and (batch bucket,
    length bucket) so that no request pays an XLA compilation, goes to
    `assets.extra/tf_serving_warmup_requests_xla` (with the other requests),
    or with `xla_warmup=True` to the file TF Serving reads: a server must
    then enable XLA (`--xla_cpu_compilation_enabled=true` on a CPU), since
    a failed warm-up request fails the model's load.

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
        xla_warmup: bool, whether TF Serving's warm-up file also warms up
            the XLA signatures' buckets.

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
        signatures = translator.signatures()
        tf.saved_model.save(translator, staging, signatures=signatures)
        sentences = warmup_sentences or DEFAULT_WARMUP_SENTENCES
        plain = [name for name in signatures if not name.endswith("_xla")]
        buckets = _bucket_batches(translator, signatures)
        if buckets:
            write_warmup_requests(staging, sentences, signatures=plain,
                                  bucket_batches=buckets, filename=XLA_WARMUP_FILE)  # fmt: skip
        write_warmup_requests(staging, sentences, signatures=plain,
                              bucket_batches=buckets if xla_warmup else ())  # fmt: skip
        os.rename(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return path


def _bucket_batches(translator, signatures):
    """`(signature, sentences)` warm-up requests of the XLA signatures."""
    names = [name for name in signatures if name.endswith("_xla")]
    if not names:
        return []
    batches = translator.xla_warmup_batches()
    return [(name, sentences) for name in names for _, _, sentences in batches]


def write_warmup_requests(
    saved_model_dir,
    sentences,
    model_name="translator",
    signatures=("serving_default", "translate_greedy"),
    bucket_batches=(),
    filename=WARMUP_FILE,
):
    """Writes TF Serving warmup requests to `assets.extra/`.

    TF Serving runs each request once when it loads the version, before it
    serves (it reads at most 1000 of them).

    Args:
        saved_model_dir: the SavedModel version directory.
        sentences: strings, one request of them per name in `signatures`.
        model_name: str, the model name in the requests.
        signatures: signature names that get the `sentences` request.
        bucket_batches: `(signature, sentences)` pairs, one request each
            (`export_translator` passes one per XLA signature and (batch
            bucket, length bucket): see `Translator.xla_warmup_batches`).
        filename: the file's path in `saved_model_dir` (TF Serving reads
            `WARMUP_FILE`).

    Returns:
        The path of the written file.
    """
    from tensorflow_serving.apis import model_pb2
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    requests = [(name, list(sentences)) for name in signatures]
    requests += [(name, list(batch)) for name, batch in bucket_batches]
    path = os.path.join(saved_model_dir, filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, batch in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=signature
                )
            )
            request.inputs["sentences"].CopyFrom(
                tf.make_tensor_proto(batch, dtype=tf.string)
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
