"""Averages the last K checkpoints of a WMT run (paper section 6.1).

    python examples/wmt/average.py --model-dir runs/wmt-base --last 5   # base
    python examples/wmt/average.py --model-dir runs/wmt-big --last 20   # big

The paper's base models are the average of the last 5 checkpoints (written
at 10-minute intervals), the big ones of the last 20. `--last` defaults to
that for the run's preset (5 otherwise). Averaging is the library's
`keras_transformer.training.checkpoints.average_checkpoints`; this script
picks the files, copies them from Cloud Storage first when DIR is a
`gs://` URL, and writes:

- DIR/averaged.weights.h5: the averaged weights (what `evaluate.py` and
  `export.py` load by default);
- DIR/model.keras: the averaged model, so that the package's command line
  (`keras-transformer translate --model DIR`, `evaluate`, `export`) can use
  a local DIR;
- DIR/averaged.json: the checkpoints and steps averaged.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import wmt_common as common  # noqa: E402

from keras_transformer.text import load_vocabularies  # noqa: E402
from keras_transformer.training.checkpoints import average_checkpoints  # noqa: E402
from keras_transformer.training.checkpoints import list_step_checkpoints  # noqa: E402
from keras_transformer.training.trainer import SetupError  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        description="Average the last checkpoints of a WMT training run."
    )
    parser.add_argument("--model-dir", required=True)
    parser.add_argument(
        "--last",
        type=int,
        help="Checkpoints to average (default: 5 for base, 20 for big).",
    )
    return parser


def main(argv=None, log=print):
    """Returns `{"steps": [...], "weights": path, "model": path}`."""
    args = build_parser().parse_args(argv)
    model_dir = args.model_dir
    config = common.require_config(model_dir)
    last = args.last or common.AVERAGE_LAST.get(config["preset"], 5)
    if last < 1:
        raise SetupError(f"--last must be at least 1, not {last}")
    directory = common.checkpoint_dir(model_dir)
    checkpoints = list_step_checkpoints(directory, common.CHECKPOINT_PATTERN)[-last:]
    if not checkpoints:
        raise SetupError(f"No checkpoint in {directory}; train first.")
    if len(checkpoints) < last:
        log(f"Only {len(checkpoints)} checkpoint(s) to average, not {last}.")
    steps = [step for step, _ in checkpoints]
    log(f"Averaging the checkpoints of steps {steps}.")
    tokenizer, _ = load_vocabularies(common.join(model_dir, common.VOCABULARY_DIR))
    model = common.inference_model(config, tokenizer)
    weights_path = common.join(model_dir, common.AVERAGED_WEIGHTS)
    model_path = common.join(model_dir, common.MODEL_FILE)
    with common.local_directory() as directory:
        paths = [common.local_copy(path, directory) for _, path in checkpoints]
        local_weights = common.join(directory, "local-" + common.AVERAGED_WEIGHTS)
        average_checkpoints(paths, local_weights, model=model)
        local_model = common.join(directory, common.MODEL_FILE)
        model.save(local_model)
        common.upload(local_weights, weights_path)
        common.upload(local_model, model_path)
    common.write_json(
        common.join(model_dir, common.AVERAGED_INFO),
        {"steps": steps, "checkpoints": [path for _, path in checkpoints]},
    )
    log(f"Wrote {weights_path} and {model_path}.")
    return {"steps": steps, "weights": weights_path, "model": model_path}


if __name__ == "__main__":
    sys.exit(common.run_cli(main, prog="average.py"))
