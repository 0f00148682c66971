"""Serving speed of one trained model along each path users deploy.

Paths (beam 4, length penalty 0.6, the model's own settings otherwise):

- `serving_default`: the exported SavedModel's default signature (what TF
  Serving runs; no XLA), loaded with `tf.saved_model.load`;
- `translate_xla`: the same SavedModel's XLA signature (bucketed shapes);
- `translate_fast`: `Translator.translate_fast` in process (what
  `keras-transformer evaluate` and `translate --model DIR` run);
- `generate`: `keras_transformer.generate` under XLA on the exact source
  shape, with the same tokenization and detokenization;
- `ctranslate2`: the weights converted by `export.to_ctranslate2` (float32),
  run by `CTranslate2Translator`.

All paths run in this one process, interleaved round by round (the machine
may be shared: the medians over rounds are reported, with the load average).
Each path first translates every sentence once (its first-call cost is that
first batch of 64; XLA paths compile there), then each round times the
batches of 64 (sentences/s) and single sentences (latency).

Usage:

    python benchmarks/serving.py --model runs/demo [--sentences 256]
        [--rounds 3] [--warmup] [--profile]

`--warmup` also times the TF Serving warm-up of `translate_xla` (one
request per batch and length bucket, from the export's warm-up file) in the
freshly loaded SavedModel; `--profile` counts the ops of the decoding loop's
body in `serving_default` and `translate_xla`.
"""

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BEAM = 4
ALPHA = 0.6
BATCH = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo", help="a model directory")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--latency-sentences", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="0: no table")
    parser.add_argument("--warmup", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated paths to skip")
    return parser.parse_args(argv)


def test_sentences(count):
    """The demo corpus' test sources, repeated up to `count`."""
    from keras_transformer.data.demo import demo_pairs

    sources = [source for source, _ in demo_pairs("test")]
    return (sources * (count // len(sources) + 1))[:count]


def build_paths(model_dir, workdir, skip):
    """`{name: translate(list[str]) -> list[str]}`, and the export path."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from keras_transformer import model_directory
    from keras_transformer.decoding import generate
    from keras_transformer.export import Translator
    from keras_transformer.export import export_translator

    model, source, target = model_directory.load_model_and_vocabularies(model_dir)
    translator = Translator(model, source, target, beam_size=BEAM, length_penalty=ALPHA)
    exported = export_translator(translator, os.path.join(workdir, "export"))
    loaded = tf.saved_model.load(exported)

    def texts(outputs):
        return [t.decode("utf-8") for t in outputs["translations"].numpy()]

    def signature(name):
        function = loaded.signatures[name]
        return lambda batch: texts(function(sentences=tf.constant(batch)))

    encode = tf.function(
        translator._encode,
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )

    def generated(batch):
        ids, empty = encode(tf.constant(batch))
        out = generate(model, ids, beam_size=BEAM, length_penalty=ALPHA)
        out = tf.where(empty, tf.constant(""), target.detokenize(out))
        return [t.decode("utf-8") for t in out.numpy()]

    paths = {
        "serving_default": signature("serving_default"),
        "translate_xla": signature("translate_xla"),
        "translate_fast": lambda batch: texts(translator.translate_fast(batch)),
        "generate": generated,
    }
    if "ctranslate2" not in skip:
        from keras_transformer.export import CTranslate2Translator
        from keras_transformer.export import to_ctranslate2

        ct2_dir = os.path.join(workdir, "ct2")
        to_ctranslate2(model, source, target, ct2_dir)
        ct2 = CTranslate2Translator(ct2_dir)
        paths["ctranslate2"] = lambda batch: ct2.translate(
            list(batch), beam_size=BEAM, length_penalty=ALPHA
        )
    return {k: v for k, v in paths.items() if k not in skip}, exported, translator


def batches(sentences, size):
    return [sentences[i : i + size] for i in range(0, len(sentences), size)]


def measure(paths, sentences, latency_sentences, rounds):
    """First-call cost, then `rounds` interleaved timings of each path."""
    first, first_pass, outputs = {}, {}, {}
    for name, translate in paths.items():
        start = time.perf_counter()
        translate(sentences[:BATCH])
        first[name] = time.perf_counter() - start
        start = time.perf_counter()
        outputs[name] = [t for b in batches(sentences, BATCH) for t in translate(b)]
        for sentence in sentences[:latency_sentences]:  # compile single ones
            translate([sentence])
        first_pass[name] = time.perf_counter() - start
    throughput = collections.defaultdict(list)
    latency = collections.defaultdict(list)
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        for name, translate in paths.items():
            start = time.perf_counter()
            for batch in batches(sentences, BATCH):
                translate(batch)
            throughput[name].append(len(sentences) / (time.perf_counter() - start))
            times = []
            for sentence in sentences[:latency_sentences]:
                start = time.perf_counter()
                translate([sentence])
                times.append(time.perf_counter() - start)
            latency[name].append(statistics.median(times))
        loads.append(os.getloadavg()[0])
    return {
        name: {
            "sentences_per_s": statistics.median(throughput[name]),
            "latency_ms": 1000 * statistics.median(latency[name]),
            "first_call_s": first[name],
            "first_pass_s": first_pass[name],
            "outputs": outputs[name],
        }
        for name in paths
    }, loads


def print_table(results, loads, reference="serving_default"):
    base = results.get(reference)
    print(
        f"\nload average (1 min) during the rounds: {', '.join(f'{x:.1f}' for x in loads)}"
    )
    print("\n| path | sentences/s (batch 64) | 1 sentence, beam 4 | first call (batch 64) "
          "| first pass (all batches + single sentences) "
          f"| x {reference} sent/s | same translations as {reference} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, row in results.items():
        ratio = (
            row["sentences_per_s"] / base["sentences_per_s"] if base else float("nan")
        )
        same = (
            sum(a == b for a, b in zip(row["outputs"], base["outputs"])) if base else 0
        )
        print(
            f"| {name} | {row['sentences_per_s']:.0f} | {row['latency_ms']:.1f} ms "
            f"| {row['first_call_s']:.2f} s | {row['first_pass_s']:.1f} s "
            f"| {ratio:.2f} | {same}/{len(row['outputs'])} |"
        )


def time_warmup(exported):
    """Replays the export's warm-up requests of `translate_xla` (from
    `tf_serving_warmup_requests_xla`) in a fresh load: (requests, seconds,
    seconds of a second replay)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from keras_transformer.export.saved_model import XLA_WARMUP_FILE

    loaded = tf.saved_model.load(exported)
    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(exported, XLA_WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        if request.model_spec.signature_name == "translate_xla":
            requests.append(tf.make_ndarray(request.inputs["sentences"]))
    function = loaded.signatures["translate_xla"]
    durations = []
    for _ in range(2):
        start = time.perf_counter()
        for batch in requests:
            function(sentences=tf.constant(batch))
        durations.append(time.perf_counter() - start)
    return len(requests), durations[0], durations[1]


def loop_body_ops(function):
    """Op counts of the largest `while` body in `function`'s graph."""
    graph_def = function.graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    bodies = []
    for f in library.values():
        for node in f.node_def:
            if node.op in ("While", "StatelessWhile"):
                bodies.append(library[node.attr["body"].func.name])
    if not bodies:
        return None
    body = max(bodies, key=lambda f: len(f.node_def))
    counts = collections.Counter(node.op for node in body.node_def)
    nested = [
        library[n.attr["f"].func.name]
        for n in body.node_def
        if n.op in ("PartitionedCall", "StatefulPartitionedCall")
        and n.attr["f"].func.name in library
    ]
    for f in nested:
        counts.update(node.op for node in f.node_def)
    return counts


# Op kinds of a decoding step (the rest: element-wise math, softmax, top-k).
MATMULS = {"MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
BOOKKEEPING = {"Const", "Shape", "StridedSlice", "Reshape", "Pack", "ConcatV2",
               "Identity", "Prod", "Fill", "Range", "ExpandDims", "Squeeze",
               "Cast", "Transpose", "ReadVariableOp"}  # fmt: skip
CACHE_WRITES = {"GatherV2", "SelectV2", "OneHot", "Equal", "TensorScatterUpdate"}


def print_profile(name, counts):
    """One line: the loop body's op count by kind, and the most common ops."""
    if not counts:
        print(f"{name}: no decoding loop found")
        return
    total = sum(counts.values())
    kinds = {
        "matmul": sum(counts[op] for op in MATMULS),
        "shape/const bookkeeping": sum(counts[op] for op in BOOKKEEPING),
        "gather/select": sum(counts[op] for op in CACHE_WRITES),
    }
    kinds["other"] = total - sum(kinds.values())
    print(f"{name}: {total} ops per decoding step: {kinds}; "
          f"most common {dict(counts.most_common(8))}")  # fmt: skip


def steps_per_sentence(paths, sentences, tokenizer):
    """Mean target tokens (EOS included) of `serving_default`'s translations
    of `sentences`, one by one: about the decoding steps of a sentence."""
    counts = [
        len(tokenizer.tokenize([paths["serving_default"]([s])[0]])[0]) + 1
        for s in sentences
    ]
    return statistics.mean(counts)


def main(argv=None):
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    sentences = test_sentences(args.sentences)
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as workdir:
        paths, exported, translator = build_paths(args.model, workdir, skip)
        if args.profile:
            import tensorflow as tf

            loaded = tf.saved_model.load(exported)
            for name in ("serving_default", "translate_xla"):
                print_profile(name, loop_body_ops(loaded.signatures[name]))
        if args.warmup:
            count, seconds, again = time_warmup(exported)
            print(f"translate_xla warm-up: {count} requests (one XLA compilation "
                  f"each), {seconds:.1f} s; replayed warm: {again:.1f} s")  # fmt: skip
        if args.rounds < 1:
            return 0
        results, loads = measure(paths, sentences, args.latency_sentences, args.rounds)
        print_table(results, loads)
        if "serving_default" in paths:
            steps = steps_per_sentence(
                paths, sentences[: args.latency_sentences], translator.target_tokenizer
            )
            for name in paths:
                ms = results[name]["latency_ms"] / steps
                print(f"{name}: {ms:.2f} ms per generated token of one sentence "
                      f"(beam 4, {steps:.1f} tokens on average)")  # fmt: skip
        print(f"translate_fast compilations: {translator.xla_compilations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
