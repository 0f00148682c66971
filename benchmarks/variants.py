"""Issue 9: each model variant trained on the embedded demo, side by side.

Every variant trains `demo_config()` (English -> German number words, the
settings of `keras-transformer demo`) with ONE model override, for the same
number of epochs and with no wall-clock limit, in its own subprocess (fresh
TensorFlow state, same seed), then is scored on the demo's 990 held-out test
numbers as `keras-transformer demo` scores it (`evaluate_translator`, beam 4,
sacreBLEU `char` tokenization). Each row is merged into the `"variants"`
section of `--results` as soon as it finishes.

    python benchmarks/variants.py                          # all, ~1 hour on 2 cores
    python benchmarks/variants.py --variants baseline,mqa  # a subset
    python benchmarks/variants.py --table                  # print the saved table

Training speed is steps/s over the training batches only (an epoch timer
from each epoch's start to its validation), epochs 2-N (`steps_per_s`) and
all (`steps_per_s_all`); greedy decoding speed after a warm-up batch.
Tables and findings: benchmarks/variants.md.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> model overrides on top of demo_config()'s (see variants.md).
VARIANTS = {
    "baseline": {},
    "learned": {"position_encoding": "learned", "max_positions": 64},
    "rotary": {"position_encoding": "rotary"},
    "relative": {"position_encoding": "relative", "max_relative_position": 16},
    "mqa": {"num_key_value_heads": 1},
    "gqa": {"num_key_value_heads": 2},
    "pre_ln": {"normalize_first": True},
}


def load_average():
    """The 1-minute load average (None where unavailable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def variant_config(name, **kwargs):
    """`demo_config(max_minutes=None, **kwargs)` with the variant's overrides."""
    from keras_transformer.training.trainer import demo_config

    config = demo_config(max_minutes=None, **kwargs)
    config.model_overrides = {**config.model_overrides, **VARIANTS[name]}
    return config


def install_epoch_timer():
    """Adds an epoch timer to every `keras.Model.fit` call of this process.

    `train_translator` builds its own callback list, so the timer goes in
    by wrapping Keras's `fit` (nothing of the library is patched). Returns
    the timer (`_pipelines.epoch_timer`); its `epochs` lists `{"steps",
    "seconds"}` of the training batches of each epoch (validation excluded).
    """
    import keras
    from _pipelines import epoch_timer

    timer, fit = epoch_timer(), keras.Model.fit

    def timed_fit(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[timer, *(callbacks or [])], **kwargs)

    keras.Model.fit = timed_fit
    return timer


def demo_pairs(config, split):
    """The demo's `(source, target)` pairs of one split."""
    from keras_transformer import data

    return list(data.as_corpus(data.parse_spec(config.train, split=split)))


def train_variant(name, output, epochs):
    """Trains one variant into `output`; returns its training numbers."""
    from keras_transformer.training.trainer import train_translator

    config = variant_config(name, output=output)
    config.epochs, config.verbose = epochs, 2
    timer = install_epoch_timer()
    load_before, started = load_average(), time.time()
    metrics = train_translator(config)
    wall = time.time() - started
    epochs = [{**e, "seconds": round(e["seconds"], 3)} for e in timer.epochs]
    rate = lambda some: sum(e["steps"] for e in some) / sum(e["seconds"] for e in some)
    steps_per_s = rate(epochs[1:] or epochs)
    # Mean real target tokens (EOS included) per training batch.
    from keras_transformer import model_directory

    *_, target_tokenizer = model_directory.load_model_and_vocabularies(output)
    ids = target_tokenizer.tokenize([t for _, t in demo_pairs(config, "train")])
    lengths = [min(int(n) + 1, config.max_length) for n in ids.row_lengths()]
    tokens_per_batch = config.batch_size * sum(lengths) / len(lengths)
    return {
        "variant": name,
        "overrides": VARIANTS[name],
        "model_overrides": config.model_overrides,
        "epochs": epochs,
        "steps_per_s": steps_per_s,
        "steps_per_s_all": rate(epochs),
        "target_tokens_per_batch": tokens_per_batch,
        "target_tokens_per_s": steps_per_s * tokens_per_batch,
        "epoch_times": epochs,
        "train_wall_seconds": round(wall, 1),
        "metrics": metrics,
        "parameters": metrics["parameters"],
        "load_1min_before": load_before,
        "load_1min_after": load_average(),
    }


def score_variant(name, output):
    """Scores a trained variant on the held-out test split: beam 4 (as
    `keras-transformer demo` does), then greedy (exact match, speed)."""
    from keras_transformer import model_directory
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import score_translations
    from keras_transformer.evaluation import translate_all
    from keras_transformer.export import Translator

    config = variant_config(name)
    model, source_tok, target_tok = model_directory.load_model_and_vocabularies(output)
    started = time.time()
    test_pairs = demo_pairs(config, "test")
    scores = evaluate_translator(
        model, source_tok, target_tok, test_pairs, beam_size=4, bleu_tokenize="char"
    )
    beam_seconds = time.time() - started
    sources, references = map(list, zip(*test_pairs))
    greedy = Translator(model, source_tok, target_tok, beam_size=1)
    translate_all(greedy, sources[:64])  # warm-up
    started = time.perf_counter()
    hypotheses = translate_all(greedy, sources)
    greedy_seconds = time.perf_counter() - started
    greedy_scores = score_translations(hypotheses, references, "char")
    return {
        "exact_match": scores["exact_match"],
        "char_bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "bleu_signature": scores["bleu_signature"],
        "test_sentences": scores["count"],
        "examples": scores["examples"],
        "beam4_eval_seconds": round(beam_seconds, 1),
        "greedy_exact_match": greedy_scores["exact_match"],
        "greedy_sentences_per_s": len(sources) / greedy_seconds,
    }


def run_one(name, output_dir, epochs):
    """Trains and scores one variant in this process; returns its row."""
    import keras
    import tensorflow as tf

    output = os.path.join(output_dir, name)
    if os.path.exists(output):
        raise SystemExit(f"{output} exists: remove it to retrain {name}.")
    row = train_variant(name, output, epochs)
    row.update(score_variant(name, output))
    row["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    row["versions"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
    }
    return row


def format_table(results):
    """The results table of variants.md (one row per trained variant)."""
    rows = [
        "| variant | exact match (beam 4) | char-BLEU | chrF | greedy exact match "
        "| train steps/s | target tokens/s | greedy sentences/s | parameters "
        "| train wall | load (1 min) |",
        "| --- |" + " ---: |" * 10,
        *(
            f"| {n} | {r['exact_match']:.3f} | {r['char_bleu']:.2f} | {r['chrf']:.2f} "
            f"| {r['greedy_exact_match']:.3f} | {r['steps_per_s']:.2f} "
            f"| {r['target_tokens_per_s']:,.0f} | {r['greedy_sentences_per_s']:.0f} "
            f"| {r['parameters']:,} | {r['metrics']['wall_seconds'] / 60:.1f} min "
            f"| {r['load_1min_before']} / {r['load_1min_after']} |"
            for n, r in ((n, results[n]) for n in VARIANTS if n in results)
            if "exact_match" in r
        ),
    ]
    return "\n".join(rows)


def read_results(path):
    """The whole results JSON (empty if absent)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def update_results(path, rows):
    """Puts `{variant: row}` into the file's `"variants"` section."""
    results = read_results(path)
    results.setdefault("variants", {}).update(rows)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def train_all(names, args):
    """Trains and scores each variant in its own subprocess, saving each row."""
    for name in names:
        print(f"== {name} (load {load_average()})", flush=True)
        row_file = os.path.join(args.output_dir, f"{name}.json")
        if os.path.exists(row_file):
            os.remove(row_file)
        command = [sys.executable, os.path.abspath(__file__), "--one", name,
                   "--epochs", str(args.epochs), "--output-dir", args.output_dir]  # fmt: skip
        process = subprocess.run(command)
        if process.returncode or not os.path.exists(row_file):
            print(f"!! {name} failed (exit {process.returncode})", flush=True)
            continue
        with open(row_file, encoding="utf-8") as f:
            row = json.load(f)
        update_results(args.results, {name: row})
        print(
            f"{name}: exact match {row['exact_match']:.3f}, char-BLEU "
            f"{row['char_bleu']:.2f}, {row['steps_per_s']:.2f} steps/s",
            flush=True,
        )


def main(argv=None):
    """Trains and scores the variants, or prints their table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--epochs", type=int, default=6, help="demo default: 6")
    parser.add_argument("--output-dir", default="runs/variants")
    parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--table", action="store_true", help="print, train nothing")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.one:
        row = run_one(args.one, args.output_dir, args.epochs)
        with open(os.path.join(args.output_dir, f"{args.one}.json"), "w") as f:
            json.dump(row, f, indent=2)
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if not args.table:
        train_all(names, args)
    print(format_table(read_results(args.results).get("variants", {})))


if __name__ == "__main__":
    main()
