"""Issue 9: each model variant trained on the embedded demo, side by side.

Every variant trains `demo_config()` (English -> German number words, the
settings of `keras-transformer demo`) with ONE model override, for the same
number of epochs and with no wall-clock limit, then is scored on the demo's
990 held-out test numbers exactly as `keras-transformer demo` scores it
(`evaluate_translator`, beam 4, sacreBLEU `char` tokenization).

    python benchmarks/variants.py                          # all, ~1 hour on 2 cores
    python benchmarks/variants.py --variants baseline,mqa  # a subset
    python benchmarks/variants.py --speed                  # re-time them round-robin
    python benchmarks/variants.py --table                  # print the saved tables

Each variant runs in its own subprocess (fresh TensorFlow state, same seed)
and its result is merged into `--results` as soon as it finishes, so an
interrupted run keeps what it measured and a rerun of one variant replaces
only that row. Model directories go to `--output-dir/<variant>/`.

Measured per variant:

- exact match, char-BLEU and chrF on the held-out test split (beam 4);
- greedy exact match, and greedy decoding speed (sentences/s, after one
  warm-up batch, batches of 64);
- training speed: steps/s over the training batches only (timed by a Keras
  callback from the start of each epoch to the start of its validation, so
  the per-epoch validation loss and BLEU are excluded); `steps_per_s` skips
  the first epoch (tracing and XLA compilation), `steps_per_s_all` does not;
  target tokens/s = steps/s x the mean number of real target tokens
  (EOS included) per training batch;
- `metrics.json`'s steps, wall seconds (everything: vocabulary, training,
  validation, per-epoch BLEU, saving) and parameter count;
- the 1-minute load average before and after, as the machine is shared.
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
REPO = os.path.dirname(HERE)

# name -> (model overrides on top of demo_config()'s, what it changes)
VARIANTS = {
    "baseline": (
        {},
        "The paper: sinusoidal positions added to the embeddings, post-LN "
        "blocks, full multi-head attention (4 query and 4 key/value heads).",
    ),
    "learned": (
        {"position_encoding": "learned", "max_positions": 64},
        "A trained position-embedding table (64 positions, more than the "
        "demo's 48-token limit) replaces the sinusoids.",
    ),
    "rotary": (
        {"position_encoding": "rotary"},
        "RoPE: queries and keys of every attention layer are rotated by "
        "position; nothing is added to the embeddings.",
    ),
    "relative": (
        {"position_encoding": "relative", "max_relative_position": 16},
        "Shaw et al. relative positions: learned key/value embeddings of "
        "the clipped distance (|i-j| <= 16) in every self-attention layer.",
    ),
    "mqa": (
        {"num_key_value_heads": 1},
        "Multi-query attention: the 4 query heads share one key/value head "
        "(smaller K/V projections and decoding cache).",
    ),
    "gqa": (
        {"num_key_value_heads": 2},
        "Grouped-query attention: 4 query heads in 2 groups, each group "
        "sharing one key/value head.",
    ),
    "pre_ln": (
        {"normalize_first": True},
        "Pre-LN: LayerNorm before each sub-layer (inside the residual "
        "branch) and a final LayerNorm after each stack.",
    ),
}


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def versions():
    import keras
    import tensorflow as tf

    import keras_transformer

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_transformer": os.path.dirname(keras_transformer.__file__),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def _install_timer(timer):
    """Adds `timer` to every `Model.fit` call of this process (the trainer
    builds its own callback list; this keeps it unchanged otherwise)."""
    import keras

    fit = keras.Model.fit

    def timed_fit(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[timer, *(callbacks or [])], **kwargs)

    keras.Model.fit = timed_fit


def _make_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds and steps of the training batches of each epoch."""

        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            self._steps = 0
            self._end = None

        def on_train_batch_end(self, batch, logs=None):
            self._steps += 1

        def on_test_begin(self, logs=None):
            if self._end is None:
                self._end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = self._end or time.perf_counter()
            self.epochs.append(
                {"steps": self._steps, "seconds": round(end - self._start, 3)}
            )

    return EpochTimer()


def _target_tokens_per_batch(config, target_tokenizer):
    """Mean real target tokens (EOS included) per training batch."""
    from keras_transformer import data

    pairs = list(data.as_corpus(data.parse_spec(config.train, split="train")))
    ids = target_tokenizer.tokenize([t for _, t in pairs])
    lengths = [min(int(n) + 1, config.max_length) for n in ids.row_lengths()]
    return config.batch_size * sum(lengths) / len(lengths)


def run_one(name, output_dir, epochs):
    """Trains and evaluates one variant in this process; returns its row."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_transformer import data
    from keras_transformer import model_directory as layout
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import score_translations
    from keras_transformer.evaluation import translate_all
    from keras_transformer.export import Translator
    from keras_transformer.training.trainer import demo_config
    from keras_transformer.training.trainer import train_translator

    overrides, _ = VARIANTS[name]
    output = os.path.join(output_dir, name)
    if os.path.exists(output):
        raise SystemExit(f"{output} exists: remove it to retrain {name}.")
    config = demo_config(output=output, max_minutes=None)
    config.model_overrides = {**config.model_overrides, **overrides}
    config.epochs = epochs
    config.verbose = 2

    timer = _make_timer()
    _install_timer(timer)
    load_before = load_average()
    started = time.time()
    metrics = train_translator(config)
    train_wall = time.time() - started

    model, source_tokenizer, target_tokenizer = layout.load_model_and_vocabularies(
        output
    )
    # Exactly what `keras-transformer demo` reports (cli.run_demo).
    test_pairs = list(data.parse_spec(config.train, split="test"))
    started = time.time()
    scores = evaluate_translator(
        model,
        source_tokenizer,
        target_tokenizer,
        test_pairs,
        beam_size=4,
        bleu_tokenize="char",
    )
    beam_eval_seconds = time.time() - started

    # Greedy: exact match and decoding speed after a warm-up batch.
    pairs = list(data.as_corpus(test_pairs))
    sources = [s for s, _ in pairs]
    references = [t for _, t in pairs]
    greedy = Translator(model, source_tokenizer, target_tokenizer, beam_size=1)
    translate_all(greedy, sources[:64])
    started = time.perf_counter()
    hypotheses = translate_all(greedy, sources)
    greedy_seconds = time.perf_counter() - started
    greedy_scores = score_translations(hypotheses, references, "char")

    later = timer.epochs[1:] or timer.epochs
    steps = sum(e["steps"] for e in later)
    seconds = sum(e["seconds"] for e in later)
    steps_per_s = steps / seconds
    tokens_per_batch = _target_tokens_per_batch(config, target_tokenizer)
    return {
        "variant": name,
        "overrides": overrides,
        "model_overrides": config.model_overrides,
        "epochs": epochs,
        "exact_match": scores["exact_match"],
        "char_bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "bleu_signature": scores["bleu_signature"],
        "test_sentences": scores["count"],
        "greedy_exact_match": greedy_scores["exact_match"],
        "greedy_sentences_per_s": len(sources) / greedy_seconds,
        "beam4_eval_seconds": round(beam_eval_seconds, 1),
        "examples": scores["examples"],
        "steps_per_s": steps_per_s,
        "steps_per_s_all": sum(e["steps"] for e in timer.epochs)
        / sum(e["seconds"] for e in timer.epochs),
        "target_tokens_per_batch": tokens_per_batch,
        "target_tokens_per_s": steps_per_s * tokens_per_batch,
        "epoch_times": timer.epochs,
        "train_wall_seconds": round(train_wall, 1),
        "metrics": metrics,
        "parameters": metrics["parameters"],
        "load_1min_before": load_before,
        "load_1min_after": load_average(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": versions(),
    }


def validation_curve(directory):
    """Per-epoch validation numbers from a model directory's TensorBoard logs.

    Returns:
        dict: `loss`, `token_accuracy` (teacher-forced), `char_bleu` and
        `chrf` (greedy, the first 200 validation sentences), one value per
        epoch.
    """
    import glob

    import tensorflow as tf

    from keras_transformer import model_directory as layout

    names = {
        "epoch_loss": "loss",
        "epoch_masked_accuracy": "token_accuracy",
        "epoch_bleu": "char_bleu",
        "epoch_chrf": "chrf",
    }
    curve = {}
    pattern = os.path.join(layout.path(directory, layout.LOG_DIR), "validation", "*")
    for path in sorted(glob.glob(pattern)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in names:
                    number = float(tf.make_ndarray(value.tensor))
                    curve.setdefault(names[value.tag], {})[event.step] = number
    return {k: [round(v[e], 4) for e in sorted(v)] for k, v in curve.items()}


def measure_speed(names, output_dir, rounds, num_batches):
    """Round-robin speed of the trained variants, in this one process.

    The shared machine's load changes during the hour the trainings take,
    so this measures all variants again, interleaved: every round times
    `num_batches` identical training batches (XLA-compiled train step, as
    in training) and greedy decoding of the 990 test numbers, for each
    variant in turn. The best round per variant is kept.
    """
    import keras

    from keras_transformer import data
    from keras_transformer import model_directory as layout
    from keras_transformer.evaluation import translate_all
    from keras_transformer.export import Translator
    from keras_transformer.training.trainer import build_model
    from keras_transformer.training.trainer import demo_config

    base = demo_config(max_minutes=None)
    train_pairs = list(data.as_corpus(data.parse_spec(base.train, split="train")))
    sources = [s for s, _ in data.as_corpus(data.parse_spec(base.train, split="test"))]
    systems = {}
    for name in names:
        directory = os.path.join(output_dir, name)
        model, source_tokenizer, target_tokenizer = layout.load_model_and_vocabularies(
            directory
        )
        batches = list(
            data.make_dataset(
                train_pairs,
                source_tokenizer.tokenize,
                target_tokenizer.tokenize,
                batch_size=base.batch_size,
                max_source_length=base.max_length,
                max_target_length=base.max_length,
                shuffle=True,
                seed=base.seed,
                drop_remainder=True,
            ).take(num_batches)
        )
        keras.utils.set_random_seed(base.seed)
        config = demo_config(max_minutes=None)
        config.model_overrides = {**config.model_overrides, **VARIANTS[name][0]}
        trainee = build_model(config, source_tokenizer, target_tokenizer)
        for x, y in batches:  # compiles every bucket shape
            trainee.train_on_batch(x, y)
        greedy = Translator(model, source_tokenizer, target_tokenizer, beam_size=1)
        translate_all(greedy, sources)  # warm-up: every batch shape once
        systems[name] = (trainee, batches, greedy)
        print(f"speed: {name} compiled", flush=True)

    times = {name: {"train": [], "greedy": []} for name in names}
    loads = []
    for _ in range(rounds):
        loads.append(load_average())
        for name, (trainee, batches, greedy) in systems.items():
            started = time.perf_counter()
            for x, y in batches:
                trainee.train_on_batch(x, y)
            times[name]["train"].append(time.perf_counter() - started)
            started = time.perf_counter()
            translate_all(greedy, sources)
            times[name]["greedy"].append(time.perf_counter() - started)
    loads.append(load_average())
    return {
        name: {
            "rounds": rounds,
            "train_batches": num_batches,
            "train_steps_per_s_best": num_batches / min(t["train"]),
            "greedy_sentences_per_s_best": len(sources) / min(t["greedy"]),
            "train_seconds": [round(x, 3) for x in t["train"]],
            "greedy_seconds": [round(x, 3) for x in t["greedy"]],
            "load_1min": loads,
        }
        for name, t in times.items()
    }


def format_speed_table(results):
    import statistics

    rows = [
        "| variant | train steps/s best (median) | vs baseline (best) "
        "| greedy sentences/s best (median) | vs baseline (best) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    speeds = {n: r["speed"] for n, r in results.items() if "speed" in r}
    base = speeds.get("baseline")
    for name in [n for n in VARIANTS if n in speeds]:
        s = speeds[name]
        train = s["train_steps_per_s_best"]
        greedy = s["greedy_sentences_per_s_best"]
        train_median = s["train_batches"] / statistics.median(s["train_seconds"])
        sentences = greedy * min(s["greedy_seconds"])
        greedy_median = sentences / statistics.median(s["greedy_seconds"])
        rel_train = f"{train / base['train_steps_per_s_best']:.2f}x" if base else ""
        rel_greedy = (
            f"{greedy / base['greedy_sentences_per_s_best']:.2f}x" if base else ""
        )
        rows.append(
            f"| {name} | {train:.1f} ({train_median:.1f}) | {rel_train} "
            f"| {greedy:.0f} ({greedy_median:.0f}) | {rel_greedy} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def format_curve_table(results):
    """Validation after each epoch (all variants reach 1.000 at the end)."""
    curves = {
        n: r["validation_curve"] for n, r in results.items() if "validation_curve" in r
    }
    if not curves:
        return ""
    epochs = max(len(c.get("token_accuracy", [])) for c in curves.values())
    shown = [e for e in (1, 2, 3) if e <= epochs]
    header = " | ".join(f"token acc. ep. {e}" for e in shown)
    header += " | " + " | ".join(f"char-BLEU ep. {e}" for e in shown)
    rows = [
        f"| variant | {header} |",
        "| --- |" + " ---: |" * (2 * len(shown)),
    ]
    for name in [n for n in VARIANTS if n in curves]:
        c = curves[name]
        cells = [f"{c['token_accuracy'][e - 1]:.4f}" for e in shown]
        cells += [f"{c['char_bleu'][e - 1]:.2f}" for e in shown]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_table(results):
    header = (
        "| variant | held-out exact match (beam 4) | char-BLEU | chrF "
        "| greedy exact match | train steps/s | target tokens/s "
        "| greedy sentences/s | parameters | train wall | load (1 min) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |"
    )
    rows = [header]
    trained = {n for n, r in results.items() if "exact_match" in r}
    order = [n for n in VARIANTS if n in trained] + sorted(trained - set(VARIANTS))
    for name in order:
        r = results[name]
        wall = r["metrics"]["wall_seconds"]
        rows.append(
            f"| {name} | {r['exact_match']:.3f} | {r['char_bleu']:.2f} "
            f"| {r['chrf']:.2f} | {r['greedy_exact_match']:.3f} "
            f"| {r['steps_per_s']:.2f} | {r['target_tokens_per_s']:,.0f} "
            f"| {r['greedy_sentences_per_s']:.0f} | {r['parameters']:,} "
            f"| {int(wall // 60)} min {int(wall % 60):02d} s "
            f"| {r['load_1min_before']} / {r['load_1min_after']} |"
        )
    return "\n".join(rows)


def _read(path):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def _write(path, results):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    parser.add_argument("--epochs", type=int, default=6, help="demo default: 6")
    parser.add_argument("--output-dir", default="runs/variants")
    parser.add_argument(
        "--results", default=os.path.join(HERE, "variants_results.json")
    )
    parser.add_argument("--table", action="store_true", help="print, train nothing")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="re-time the trained variants round-robin (no training)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--speed-batches", type=int, default=100)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)

    if args.one:
        row = run_one(args.one, args.output_dir, args.epochs)
        _write(os.path.join(args.output_dir, f"{args.one}.json"), row)
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if args.table:
        print(format_table(_read(args.results)))
        print()
        print(format_speed_table(_read(args.results)))
        print()
        print(format_curve_table(_read(args.results)))
        return
    if args.speed:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        speeds = measure_speed(names, args.output_dir, args.rounds, args.speed_batches)
        results = _read(args.results)
        for name, speed in speeds.items():
            results.setdefault(name, {})["speed"] = speed
            curve = validation_curve(os.path.join(args.output_dir, name))
            results[name]["validation_curve"] = curve
        _write(args.results, results)
        print(format_speed_table(results))
        print()
        print(format_curve_table(results))
        return
    for name in names:
        print(f"== {name} (load {load_average()})", flush=True)
        command = [sys.executable, os.path.abspath(__file__), "--one", name,
                   "--epochs", str(args.epochs), "--output-dir", args.output_dir]  # fmt: skip
        row_file = os.path.join(args.output_dir, f"{name}.json")
        if os.path.exists(row_file):
            os.remove(row_file)
        process = subprocess.run(command)
        if process.returncode or not os.path.exists(row_file):
            print(f"!! {name} failed (exit {process.returncode})", flush=True)
            continue
        results = _read(args.results)
        results[name] = _read(row_file)
        _write(args.results, results)
        r = results[name]
        print(
            f"{name}: exact match {r['exact_match']:.3f}, char-BLEU "
            f"{r['char_bleu']:.2f}, {r['steps_per_s']:.2f} steps/s, "
            f"{r['parameters']:,} parameters",
            flush=True,
        )
    print(format_table(_read(args.results)))


if __name__ == "__main__":
    main()
