"""Exports the averaged WMT model as a SavedModel translator for TF Serving.

    python examples/wmt/export.py --model-dir runs/wmt-base
    # -> runs/wmt-base/export/1/ (signatures serving_default, translate_greedy)

The library's `Translator` (tokenize -> beam search -> detokenize in one
graph: strings in, strings out; beam 4, length penalty 0.6, input + 50) and
`export_translator` (explicit signatures and TF Serving warmup requests).
When the export directory is a `gs://` URL the SavedModel is written locally
and copied.

    keras-transformer translate --model runs/wmt-base/export "Hello world."
"""

import argparse
import os
import sys

import tensorflow as tf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import wmt_common as common  # noqa: E402

from keras_transformer.export import Translator  # noqa: E402
from keras_transformer.export import export_translator  # noqa: E402

WARMUP_SENTENCES = {
    "en": ("", "Hello.", "The weather is nice today."),
    "de": ("", "Hallo.", "Das Wetter ist heute schön."),
}


def build_parser():
    parser = argparse.ArgumentParser(
        description="Export the averaged WMT model as a SavedModel translator."
    )
    parser.add_argument("--model-dir", required=True)
    parser.add_argument(
        "--checkpoint",
        default="averaged",
        help="averaged (default), latest, or the path of a .weights.h5 file.",
    )
    parser.add_argument(
        "--export-dir", help="TF Serving model base path (default: DIR/export)."
    )
    parser.add_argument(
        "--version",
        type=int,
        help="Version sub-directory; it must not exist (default: the next one).",
    )
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--max-input-tokens", type=int, default=256)
    return parser


def main(argv=None, log=print):
    """Returns `{"path": the version directory, "translator": Translator}`."""
    args = build_parser().parse_args(argv)
    config = common.require_config(args.model_dir)
    model, tokenizer, weights = common.load_trained(args.model_dir, args.checkpoint)
    translator = Translator(
        model,
        tokenizer,
        tokenizer,
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        max_input_tokens=args.max_input_tokens,
    )
    export_dir = args.export_dir or common.join(args.model_dir, common.EXPORT_DIR)
    source, _ = common.direction_languages(config["direction"])
    warmup = WARMUP_SENTENCES[source]
    if common.is_remote(export_dir):
        # `export_translator` writes its warmup file with local file calls.
        version = args.version or _next_remote_version(export_dir)
        path = common.join(export_dir, str(version))
        if tf.io.gfile.exists(path):
            raise FileExistsError(f"Version {version} already exists: {path}")
        with common.local_directory() as directory:
            local = export_translator(translator, directory, version, warmup)
            common.upload_tree(local, path)
    else:
        path = export_translator(translator, export_dir, args.version, warmup)
    log(f"Exported {weights} to {path}.")
    return {"path": path, "translator": translator}


def _next_remote_version(export_dir):
    """One more than the highest numbered version under a remote base path."""
    if not tf.io.gfile.isdir(export_dir):
        return 1
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(export_dir)]
    versions = [int(name) for name in names if name.isdigit()]
    return max(versions, default=0) + 1


if __name__ == "__main__":
    sys.exit(common.run_cli(main, prog="export.py"))
