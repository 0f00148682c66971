"""`keras-transformer average`: the average of the last N checkpoints.

The paper's base models are the average of their last 5 checkpoints, the
big ones of the last 20 (section 6.1). Training writes one weights
checkpoint per epoch, `DIR/checkpoints/epoch-NNN.weights.h5`; this command
averages the last N (by number) with `training.average_checkpoints`.

The output is, by default, a model directory `DIR/averaged/` (the averaged
`model.keras`, a copy of the vocabulary and `train_config.json`, and
`metrics.json` naming the checkpoints averaged) that every command takes
as `--model` (`evaluate`, `translate`, `export`, `score`). An `--output`
ending in `.keras` writes only the model file, which
`keras.saving.load_model` reads after `import keras_transformer`.
"""

import os
import shutil

from keras_transformer.cli import common

DEFAULT_OUTPUT = "averaged"


def add_command(commands):
    average = commands.add_parser(
        "average",
        help="Average the last N checkpoints of a training run.",
        description="Average the weights of the last N epoch checkpoints of "
        "DIR/checkpoints (the paper's checkpoint averaging) into a model "
        "directory that evaluate, translate, export and score take as --model.",
    )
    average.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="A trained-model directory (from `keras-transformer train`).",
    )
    average.add_argument(
        "--last",
        required=True,
        type=common.positive_int,
        metavar="N",
        help="How many of the last checkpoints to average (the paper: 5 for "
        "base models, 20 for big ones).",
    )
    average.add_argument(
        "--output",
        metavar="PATH",
        help=f"A model directory to write (default: DIR/{DEFAULT_OUTPUT}), or a "
        "FILE.keras to write only the averaged model.",
    )


def run(args):
    from keras_transformer import model_directory as layout
    from keras_transformer.training import average_checkpoints

    trained = layout.path(args.model, layout.MODEL_FILE)
    if not os.path.isfile(trained):
        raise common.UserError(
            f"Trained model not found: {trained} is missing (is {args.model} a "
            "directory written by `keras-transformer train`?)"
        )
    output = args.output or os.path.join(args.model, DEFAULT_OUTPUT)
    model_file = _check_output(trained, output)
    paths = _last_checkpoints(layout.path(args.model, layout.CHECKPOINT_DIR), args.last)
    model, _, _ = common.load_model_dir(args.model)
    try:
        average_checkpoints(paths, model=model)
    except ValueError as error:
        raise common.UserError(str(error)) from None
    replaced = os.path.exists(model_file)
    if model_file == output:
        _save(model, model_file)
    else:
        os.makedirs(output, exist_ok=True)
        _save(model, model_file)
        _copy_directory_files(args.model, output, paths)
    names = ", ".join(os.path.basename(path) for path in paths)
    noun = "checkpoint" if len(paths) == 1 else "checkpoints"
    print(f"Averaged {len(paths)} {noun} ({names}) into {output}")
    if replaced:
        print(f"(replaced the previous {model_file})")
    return output


def _check_output(trained, output):
    """The model file to write; refuses to overwrite the trained model."""
    if output.endswith(".keras"):
        model_file = output
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise common.UserError(f"argument --output: no such directory: {folder}")
    else:
        if os.path.exists(output) and not os.path.isdir(output):
            raise common.UserError(
                "argument --output: must be a directory or a FILE.keras. "
                f"Received: {output}"
            )
        model_file = os.path.join(output, "model.keras")
    if os.path.exists(model_file) and os.path.samefile(model_file, trained):
        raise common.UserError(
            f"argument --output: would overwrite the trained model {trained}; "
            "choose another path"
        )
    return model_file


def _last_checkpoints(directory, last):
    """The paths of the last `last` epoch checkpoints, oldest first."""
    from keras_transformer.training import list_step_checkpoints

    found = [path for _, path in list_step_checkpoints(directory, "*.weights.h5")]
    if not found:
        raise common.UserError(
            f"no checkpoints to average: {directory} holds no "
            "epoch-NNN.weights.h5 file (training writes one per epoch)"
        )
    if last > len(found):
        raise common.UserError(
            f"argument --last: {last} checkpoints asked, but {directory} holds "
            f"only {len(found)}"
        )
    return found[-last:]


def _save(model, model_file):
    """`model.save(model_file)`, atomically (a crash leaves no half file)."""
    temporary = f"{model_file}.{os.getpid()}.tmp.keras"
    try:
        model.save(temporary)
        os.replace(temporary, model_file)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _copy_directory_files(model_dir, output, paths):
    """Vocabulary, training settings and metrics (with the averaged files)."""
    from keras_transformer import model_directory as layout

    shutil.copytree(
        layout.path(model_dir, layout.VOCABULARY_DIR),
        layout.path(output, layout.VOCABULARY_DIR),
        dirs_exist_ok=True,
    )
    config = layout.path(model_dir, layout.CONFIG_FILE)
    if os.path.exists(config):
        shutil.copyfile(config, layout.path(output, layout.CONFIG_FILE))
    metrics_file = layout.path(model_dir, layout.METRICS_FILE)
    metrics = layout.read_json(metrics_file) if os.path.exists(metrics_file) else {}
    metrics["averaged_checkpoints"] = [os.path.abspath(path) for path in paths]
    layout.write_json(layout.path(output, layout.METRICS_FILE), metrics)
