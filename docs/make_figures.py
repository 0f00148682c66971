"""Regenerates every figure of the documentation site with keras_transformer.viz.

    keras-transformer demo --output runs/demo
    python docs/make_figures.py --model runs/demo [--output docs/figures]

Each figure is drawn by the library from the trained model directory given
(the pictures in `docs/figures/` come from the `demo` model), so the pages
show what the code computes, not a drawing. The tests run this script on a
small trained model and check that every figure the pages use is written.
"""

import argparse
import os
import pathlib
import sys

# The sentence of the attention figures: one of the demo's own examples.
SENTENCE = "four thousand, two hundred and fifteen"
# Resolution of the PNGs: small files, sharp enough for a web page.
DPI = 80


def _attention_figure(kind, layer):
    def draw(model, source_tokenizer, target_tokenizer, path):
        from keras_transformer import viz

        return viz.explain(
            model,
            source_tokenizer,
            target_tokenizer,
            SENTENCE,
            kind=kind,
            layer=layer,
            generate_kwargs={"max_length": 32},
        )

    return draw


def _positions_figure(length, d_model):
    def draw(model, source_tokenizer, target_tokenizer, path):
        from keras_transformer import viz

        return viz.plot_positional_encoding(length=length, d_model=d_model)

    return draw


# File name (in --output) -> how it is drawn.
FIGURES = {
    "positional_encoding.png": _positions_figure(length=100, d_model=512),
    "encoder_self_attention_layer0.png": _attention_figure("encoder", 0),
    "encoder_self_attention.png": _attention_figure("encoder", -1),
    "decoder_self_attention.png": _attention_figure("decoder", -1),
    "cross_attention.png": _attention_figure("cross", -1),
}


def make_figures(model_dir, output):
    """Writes every figure of `FIGURES` to `output`; returns their paths."""
    from keras_transformer import viz

    model, source_tokenizer, target_tokenizer = viz.load_model_dir(model_dir)
    os.makedirs(output, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        path = os.path.join(output, name)
        figure = draw(model, source_tokenizer, target_tokenizer, path)
        viz.save_figure(figure, path, dpi=DPI)
        paths.append(path)
        print(f"Wrote {path} ({os.path.getsize(path) // 1024} kB)")
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="A trained model directory."
    )
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).resolve().parent / "figures"),
        metavar="DIR",
        help="Where the PNGs go (default: docs/figures next to this script).",
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "model.keras")):
        parser.error(
            f"{args.model} is not a trained model directory (no model.keras); "
            "train one with: keras-transformer demo --output runs/demo"
        )
    make_figures(args.model, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
