"""Writing the translator as a versioned SavedModel for TF Serving."""

import os

import tensorflow as tf

# At most 1000 records are read by TF Serving from this file.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_WARMUP_SENTENCES = ("", "one", "two hundred and five")


def export_translator(translator, export_dir, version=1, warmup_sentences=None):
    """Saves `translator` to `export_dir/<version>/` with explicit signatures.

    Signatures: `serving_default` (beam search with the translator's beam
    size) and `translate_greedy`, each taking `sentences` (tf.string `[None]`)
    and returning `translations` (tf.string `[None]`) and `scores` (float32
    `[None]`). Also writes `assets.extra/tf_serving_warmup_requests`, so TF
    Serving warms the model up before it serves.

    Args:
        translator: a `keras_transformer.export.Translator`.
        export_dir: the model base path TF Serving watches.
        version: int, the version sub-directory.
        warmup_sentences: strings for the warmup requests (default: a few
            short ones, the empty string included).

    Returns:
        The path of the written version directory.
    """
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be a positive integer. Received: {version}")
    path = os.path.join(os.fspath(export_dir), str(version))
    tf.saved_model.save(translator, path, signatures=translator.signatures())
    write_warmup_requests(path, warmup_sentences or DEFAULT_WARMUP_SENTENCES)
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
