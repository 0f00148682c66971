"""`keras-transformer explain` and `plot-positions`: the pictures."""

from keras_transformer.cli import common


def add_explain_command(commands):
    explain = commands.add_parser("explain", help="Plot attention weights.")
    explain.add_argument(
        "--model", required=True, metavar="DIR", help="A trained-model directory."
    )
    explain.add_argument("sentence", help="The source sentence to translate.")
    explain.add_argument(
        "--output", required=True, type=common.figure_path, help="A .png or .svg file."
    )
    explain.add_argument(
        "--layer", type=int, default=-1, help="Which layer (Python index)."
    )
    explain.add_argument(
        "--head", type=int, help="One head (default: every head, side by side)."
    )
    explain.add_argument(
        "--kind",
        default="encoder",
        choices=["encoder", "decoder", "cross"],
        help="Encoder self-attention, decoder self-attention, or "
        "encoder-decoder (cross) attention.",
    )


def add_plot_positions_command(commands):
    positions = commands.add_parser(
        "plot-positions", help="Plot the sinusoidal positional encoding."
    )
    positions.add_argument(
        "--length", type=common.positive_int, default=100, help="Positions (rows)."
    )
    positions.add_argument(
        "--d-model",
        type=common.positive_int,
        default=512,
        help="Encoding dimensions (columns).",
    )
    positions.add_argument(
        "--output", required=True, type=common.figure_path, help="A .png or .svg file."
    )


def run_explain(args):
    from keras_transformer import viz

    common.require_matplotlib()
    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    try:
        viz.explain(
            model,
            source_tokenizer,
            target_tokenizer,
            args.sentence,
            kind=args.kind,
            layer=args.layer,
            head=args.head,
            output=args.output,
        )
    except ValueError as error:
        raise common.UserError(str(error)) from None
    print(f"Wrote {args.output}")


def run_plot_positions(args):
    from keras_transformer import viz

    common.require_matplotlib()
    try:
        viz.plot_positions(args.output, length=args.length, d_model=args.d_model)
    except ValueError as error:
        raise common.UserError(str(error)) from None
    print(f"Wrote {args.output}")
