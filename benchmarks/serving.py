"""Serving speed and BLEU of one trained model along each path users deploy.

Paths (beam 4, length penalty 0.6, the model's own settings otherwise):

- `serving_default`: the exported SavedModel's default signature (what TF
  Serving runs; no XLA), loaded with `tf.saved_model.load`;
- `translate_xla`: the same SavedModel's XLA signature (bucketed shapes);
- `translate`: `Translator.translate` in process (the `tf.function` that
  `serving_default` exports; no XLA);
- `translate_fast`: `Translator.translate_fast` in process (XLA on
  bucketed shapes: what `keras-transformer evaluate`, `translate --model
  DIR` and the BLEU callback run);
- `generate`: `keras_transformer.generate` under XLA on the exact source
  shape, with the same tokenization and detokenization;
- `ctranslate2`, `ctranslate2_int8`: the weights converted by
  `export.to_ctranslate2` (float32, and `quantization="int8"`), run by
  `export.CTranslate2Translator` (in a process without TensorFlow, as
  `keras-transformer translate` runs a CTranslate2 export).

The driver prepares once (loads the model directory, exports the SavedModel
with `export.export_translator`, converts to CTranslate2) into a work
folder, then runs each path in its own fresh process, one after the other
(`--worker NAME`). Before each worker it waits up to `--idle-wait` seconds
for the 1-minute load average to fall under `--idle-load`, and it records
the load average before and after the worker and the CPU time that other
processes used while the worker ran (from `/proc/stat`): a row measured on
a busy machine is marked `*`.

Each worker times its first call (the load, then a first batch of 64:
XLA paths compile there; the imports are timed apart), translates every
sentence once in batches of 64 (its translations, scored with sacreBLEU
with the model's `bleu_tokenize` from `train_config.json`) and each single
sentence of the latency set once (so XLA paths compile their shapes), then
`--rounds` times: all sentences in batches of 64 (sentences/s: the median
round) and `--latency-sentences` sentences one by one (the median time).
Tokens/s counts the target SentencePiece tokens of the translations
(re-tokenized from the text, EOS excluded) per second of the median round.

Usage:

    python benchmarks/serving.py --model runs/demo [--test FILE.tsv]
        [--sentences N] [--rounds 3] [--latency-sentences 20]
        [--skip translate_xla,generate] [--warmup] [--profile]
        [--ct2-intra-threads N] [--idle-wait 60] [--idle-load 0.7]
        [--workdir DIR] [--output-json FILE]

The test set defaults to the demo corpus' test split; `--test FILE` reads
`source<TAB>reference` lines. `--warmup` also times the TF Serving warm-up
of `translate_xla` (one request per batch and length bucket, from the
export's warm-up file) in a fresh process; `--profile` counts the ops of
the decoding loop's body in `serving_default` and `translate_xla`.
`--ct2-intra-threads N` sets CTranslate2's OpenMP threads (default 0:
CTranslate2's own default, 4, which `CTranslate2Translator` users get).
"""

import argparse
import collections
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BEAM = 4
ALPHA = 0.6
BATCH = 64
REFERENCE = "serving_default"
RESULT_MARKER = "@@SERVING_RESULT@@"
# A row is marked busy when other processes used more than this fraction of
# the machine's CPU time while its worker ran.
BUSY_OTHER_CPU = 0.10

# name: the row's label in the table
PATHS = {
    "serving_default": "SavedModel `serving_default`",
    "translate_xla": "SavedModel `translate_xla`",
    "translate": "`Translator.translate` (no XLA)",
    "translate_fast": "`Translator.translate_fast` (XLA buckets)",
    "generate": "`generate` (XLA, exact shapes)",
    "ctranslate2": "CTranslate2 float32",
    "ctranslate2_int8": "CTranslate2 int8",
}
SAVED_MODEL_PATHS = ("serving_default", "translate_xla")
CT2_PATHS = {"ctranslate2": None, "ctranslate2_int8": "int8"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo", help="a model directory")
    parser.add_argument(
        "--test", help="TSV file of `source<TAB>reference` lines (default: demo test)"
    )
    parser.add_argument("--sentences", type=int, help="default: the whole test set")
    parser.add_argument("--latency-sentences", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="0: no table")
    parser.add_argument("--warmup", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated paths to skip")
    parser.add_argument("--idle-wait", type=float, default=60.0)
    parser.add_argument(
        "--idle-load", type=float, default=0.7, help="1-minute load average"
    )
    parser.add_argument(
        "--ct2-intra-threads",
        type=int,
        default=0,
        help="CTranslate2's OpenMP threads (0: its default, 4)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per worker")
    parser.add_argument("--workdir", help="keep the prepared files here")
    parser.add_argument("--output-json", help="save every number to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)
    for name in ("sentences", "latency_sentences"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.ct2_intra_threads < 0:
        parser.error(f"--ct2-intra-threads must be >= 0, got {args.ct2_intra_threads}")
    if args.rounds < 0:
        parser.error(f"--rounds must be >= 0, got {args.rounds}")
    args.skip = set(filter(None, args.skip.split(",")))
    unknown = args.skip - set(PATHS)
    if unknown:
        parser.error(
            f"unknown paths in --skip: {sorted(unknown)}; paths: {list(PATHS)}"
        )
    return args


# ---------------------------------------------------------------- driver


def read_test_set(test_file, count):
    """`(sources, references)`: the first `count` pairs (default all)."""
    if test_file:
        pairs = []
        with open(test_file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                if "\t" not in line:
                    raise SystemExit(f"{test_file}:{number}: no TAB in {line!r}")
                pairs.append(tuple(line.split("\t", 1)))
    else:
        from keras_transformer.data.demo import demo_pairs

        pairs = list(demo_pairs("test"))
    pairs = pairs[:count] if count else pairs
    return [s for s, _ in pairs], [r for _, r in pairs]


def prepare(args, workdir, names, sources, references):
    """Exports what the workers load into `workdir`; returns the settings
    (`workdir/settings.json`) and the export path."""
    from keras_transformer import model_directory
    from keras_transformer.export import Translator
    from keras_transformer.export import export_translator

    timings = {}
    start = time.perf_counter()
    model, source, target = model_directory.load_model_and_vocabularies(args.model)
    translator = Translator(model, source, target, beam_size=BEAM, length_penalty=ALPHA)
    exported = None
    if set(SAVED_MODEL_PATHS) & set(names) or args.profile or args.warmup:
        exported = export_translator(translator, os.path.join(workdir, "export"))
        timings["export_s"] = time.perf_counter() - start
    for name, quantization in CT2_PATHS.items():
        if name in names:
            from keras_transformer.export import to_ctranslate2

            begin = time.perf_counter()
            to_ctranslate2(model, source, target, os.path.join(workdir, name),
                           quantization=quantization)  # fmt: skip
            timings[f"{name}_conversion_s"] = time.perf_counter() - begin
    target_model = os.path.join(workdir, "target.model")
    with open(target_model, "wb") as f:
        f.write(target.model_proto)
    config_file = model_directory.path(args.model, model_directory.CONFIG_FILE)
    config = (
        model_directory.read_json(config_file) if os.path.exists(config_file) else {}
    )
    settings = {
        "model": os.path.abspath(args.model),
        "saved_model": exported,
        "ctranslate2": os.path.join(workdir, "ctranslate2"),
        "ctranslate2_int8": os.path.join(workdir, "ctranslate2_int8"),
        "target_model": target_model,
        "bleu_tokenize": config.get("bleu_tokenize") or "13a",
        "sources": sources,
        "references": references,
        "latency_sentences": args.latency_sentences,
        "rounds": args.rounds,
        "ct2_intra_threads": args.ct2_intra_threads,
        "preparation": timings,
    }
    with open(os.path.join(workdir, "settings.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f)
    return settings, exported


def busy_cpu_seconds():
    """CPU-seconds all processes have used since boot (`/proc/stat`), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user .. steal
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(threshold, max_wait):
    """Waits until the 1-minute load average is under `threshold`, at most
    `max_wait` seconds; returns the seconds waited."""
    start = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - start < max_wait:
        time.sleep(min(5.0, max(0.1, max_wait - (time.monotonic() - start))))
    return time.monotonic() - start


def watch(proc, timeout):
    """Waits for `proc` (killed after `timeout` seconds); returns whether it
    (or this driver, when a poll comes late) was ever seen stopped: SIGSTOP
    by another job, which voids its timings."""
    deadline = time.monotonic() + timeout
    stopped, last = False, time.monotonic()
    while proc.poll() is None:
        now = time.monotonic()
        stopped |= now - last > 2.0  # this driver itself was stopped
        last = now
        if now > deadline:
            proc.kill()
            proc.wait()
            proc.returncode = None
            break
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                stopped |= f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except (OSError, IndexError):
            pass
        time.sleep(0.2)
    return stopped


def run_worker(name, workdir, args):
    """Runs one worker process after the idle check; returns its result
    with the machine's load around it."""
    waited = wait_for_idle(args.idle_load, args.idle_wait)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    if name in CT2_PATHS:  # as the command line runs a CTranslate2 export
        env["KERAS_TRANSFORMER_DEFER_IMPORTS"] = "1"
    command = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--workdir", workdir]  # fmt: skip
    machine = {"idle_wait_s": waited, "load_before": os.getloadavg()[0]}
    busy, own = busy_cpu_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    log_path = os.path.join(workdir, f"{name}.log")
    out_path = os.path.join(workdir, f"{name}.out")
    with open(log_path, "w") as log, open(out_path, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=log, env=env)
        machine["stopped_seen"] = watch(proc, args.timeout)
    if proc.returncode is None:
        return {"status": "timeout", **machine}
    wall = time.perf_counter() - start
    machine["load_after"] = os.getloadavg()[0]
    machine["process_s"] = wall
    machine["worker_cpu_s"] = children_cpu_seconds() - own
    if busy is not None:
        other = busy_cpu_seconds() - busy - machine["worker_cpu_s"]
        machine["other_cpu_fraction"] = max(other, 0.0) / (wall * os.cpu_count())
    machine["idle_reached"] = machine["load_before"] < args.idle_load
    # Busy: other processes used the CPU while the worker ran (the load
    # average before it also counts the previous worker's own decaying load,
    # so it decides only where /proc/stat cannot be read).
    other = machine.get("other_cpu_fraction")
    machine["busy"] = machine["stopped_seen"] or (
        other > BUSY_OTHER_CPU if other is not None else not machine["idle_reached"]
    )
    with open(out_path) as out:
        lines = out.read().splitlines()
    for line in lines:
        if line.startswith(RESULT_MARKER):
            return {"status": "ok", **json.loads(line[len(RESULT_MARKER) :]), **machine}
    with open(log_path) as log:
        tail = log.read()[-3000:]
    return {
        "status": "error",
        "returncode": proc.returncode,
        "log_tail": tail,
        **machine,
    }


def score(results, settings):
    """Adds BLEU, tokens/s and agreement with `REFERENCE` to each result."""
    import sacrebleu
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=settings["target_model"])
    references = settings["references"]
    base = results.get(REFERENCE, {}).get("outputs")
    for row in results.values():
        outputs = row.get("outputs")
        if not outputs:
            continue
        bleu = sacrebleu.metrics.BLEU(tokenize=settings["bleu_tokenize"])
        row["bleu"] = bleu.corpus_score(outputs, [references]).score
        row["bleu_signature"] = str(bleu.get_signature())
        row["target_tokens"] = sum(len(processor.encode(t)) for t in outputs)
        row["exact_match"] = sum(
            h.strip() == r.strip() for h, r in zip(outputs, references)
        )
        if row.get("sentences_per_s"):
            row["tokens_per_s"] = (
                row["sentences_per_s"] * row["target_tokens"] / len(outputs)
            )
        if base:
            row["same_as_reference"] = sum(a == b for a, b in zip(outputs, base))


def _number(value, spec, suffix=""):
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_table(results):
    """The markdown table, then one line of details per path."""
    base = results.get(REFERENCE, {}).get("sentences_per_s")
    print(f"\n| path | sentences/s (batch {BATCH}) | tokens/s | 1 sentence, beam {BEAM} "
          f"| first call (load + batch of {BATCH}) | BLEU | x {REFERENCE} "
          f"| same as {REFERENCE} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        label = PATHS[name]
        if row.get("ct2_intra_threads"):
            label += f", intra_threads={row['ct2_intra_threads']}"
        label += " *" if row.get("busy") else ""
        if row["status"] != "ok":
            print(f"| {label} | {row['status']} |  |  |  |  |  |  |")
            continue
        speed = row.get("sentences_per_s")
        ratio = speed / base if speed and base else None
        same = row.get("same_as_reference")
        same = "n/a" if same is None else f"{same}/{len(row['outputs'])}"
        print(
            f"| {label} | {_number(speed, '.0f')} "
            f"| {_number(row.get('tokens_per_s'), '.0f')} "
            f"| {_number(row.get('latency_ms'), '.1f', ' ms')} "
            f"| {row['first_call_s']:.2f} s | {row['bleu']:.2f} "
            f"| {_number(ratio, '.2f')} | {same} |"
        )
    if any(row.get("busy") for row in results.values()):
        print(f"\n\\* measured on a busy machine: other processes used more than "
              f"{BUSY_OTHER_CPU:.0%} of the CPU time while its worker ran (or, "
              f"without /proc/stat, the 1-minute load average was over the idle "
              f"threshold when it started), or the worker was seen stopped "
              f"(SIGSTOP) by another job.")  # fmt: skip
    print()
    for name, row in results.items():
        print_details(name, row)


def print_details(name, row):
    """One line: the load around the worker, the first-call parts, rounds."""
    load = (f"load {_number(row.get('load_before'), '.2f')} -> "
            f"{_number(row.get('load_after'), '.2f')}")  # fmt: skip
    other = row.get("other_cpu_fraction")
    if other is not None:
        load += f", other processes {other:.0%} of the CPU"
    if row.get("stopped_seen"):
        load += ", seen stopped (SIGSTOP)"
    if row["status"] != "ok":
        print(f"{name}: {row['status']} ({load}) {row.get('log_tail', '')[-1500:]}")
        return
    rounds = ", ".join(f"{x:.0f}" for x in row["sentences_per_s_rounds"])
    extra = ""
    if row.get("xla_compilations") is not None:
        extra = f"; XLA compilations {row['xla_compilations']}"
    print(f"{name}: {load}; imports {row['import_s']:.1f} s"
          f"{' (TensorFlow)' if row['tensorflow_imported'] else ' (no TensorFlow)'}, "
          f"load {row['load_s']:.2f} s, first batch {row['first_batch_s']:.2f} s, "
          f"first pass {row['first_pass_s']:.1f} s; sentences/s per round: "
          f"{rounds or 'n/a'}; {row['target_tokens']} target tokens, "
          f"exact match {row['exact_match']}/{len(row['outputs'])}{extra}")  # fmt: skip


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


def profile(exported):
    """`{signature: {"total", "kinds", "most_common"}}` of the decoding
    loop's body of `serving_default` and `translate_xla`, printed."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(exported)
    profiles = {}
    for name in SAVED_MODEL_PATHS:
        counts = loop_body_ops(loaded.signatures[name])
        if not counts:
            print(f"{name}: no decoding loop found")
            continue
        total = sum(counts.values())
        kinds = {
            "matmul": sum(counts[op] for op in MATMULS),
            "shape/const bookkeeping": sum(counts[op] for op in BOOKKEEPING),
            "gather/select": sum(counts[op] for op in CACHE_WRITES),
        }
        kinds["other"] = total - sum(kinds.values())
        common = dict(counts.most_common(8))
        print(f"{name}: {total} ops per decoding step: {kinds}; most common {common}")
        profiles[name] = {"total": total, "kinds": kinds, "most_common": common}
    return profiles


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state():
    """`(HEAD, git status --short)` of this checkout, or Nones."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*arguments):
        try:
            return subprocess.run(["git", *arguments], cwd=root, capture_output=True,
                                  text=True, timeout=30).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None

    return git("rev-parse", "HEAD"), git("status", "--short")


# ---------------------------------------------------------------- workers


def _texts(outputs):
    return [t.decode("utf-8") for t in outputs["translations"].numpy()]


def import_libraries(name):
    """Imports what path `name` needs (timed apart from its first call)."""
    if name in CT2_PATHS:
        import ctranslate2  # noqa: F401
        import sentencepiece  # noqa: F401

        from keras_transformer.export import CTranslate2Translator  # noqa: F401

        return
    import tensorflow  # noqa: F401
    import tensorflow_text  # noqa: F401

    import keras_transformer  # noqa: F401
    from keras_transformer.export import Translator  # noqa: F401


def load_path(name, settings):
    """Loads path `name`: a function `list[str] -> list[str]` (batch), and
    a function returning its XLA compilation count (or None)."""
    if name in CT2_PATHS:
        from keras_transformer.export import CTranslate2Translator

        ct2 = CTranslate2Translator(
            settings[name], intra_threads=settings["ct2_intra_threads"]
        )
        return (lambda batch: ct2.translate(list(batch), beam_size=BEAM,
                                            length_penalty=ALPHA)), None  # fmt: skip
    import tensorflow as tf

    if name in SAVED_MODEL_PATHS:
        loaded = tf.saved_model.load(settings["saved_model"])

        def signature(batch):
            function = loaded.signatures[name]
            return _texts(function(sentences=tf.constant(batch, tf.string)))

        return signature, None
    from keras_transformer import model_directory
    from keras_transformer.export import Translator

    model, source, target = model_directory.load_model_and_vocabularies(
        settings["model"]
    )
    translator = Translator(model, source, target, beam_size=BEAM, length_penalty=ALPHA)
    if name == "translate":
        return lambda batch: _texts(translator.translate(tf.constant(batch))), None
    if name == "translate_fast":
        return (lambda batch: _texts(translator.translate_fast(batch)),
                lambda: translator.xla_compilations)  # fmt: skip
    return _generate_path(tf, translator), None


def _generate_path(tf, translator):
    """`generate` under XLA on the exact source shape, with the
    translator's SentencePiece models and EOS (test sentences are short
    and never empty: no truncation or empty-string handling)."""
    from keras_transformer.decoding import generate

    model = translator.model
    source, target = translator.source_tokenizer, translator.target_tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def encode(sentences):
        ids = tf.cast(source.tokenize(sentences), tf.int32)
        eos = tf.fill([ids.nrows(), 1], tf.constant(model.eos_id, tf.int32))
        ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
        return ids.to_tensor(default_value=model.pad_id)

    def generated(batch):
        ids = generate(model, encode(tf.constant(batch)), beam_size=BEAM,
                       length_penalty=ALPHA)  # fmt: skip
        return [t.decode("utf-8") for t in target.detokenize(ids).numpy()]

    return generated


def timed(function, *arguments):
    start = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - start


def measure(translate, sentences, latency_sentences, rounds):
    """The first batch, the first pass, then `rounds` timed rounds."""
    batches = [sentences[i : i + BATCH] for i in range(0, len(sentences), BATCH)]
    singles = [[s] for s in sentences[:latency_sentences]]
    _, first_batch = timed(translate, batches[0])
    start = time.perf_counter()
    outputs = [t for batch in batches for t in translate(batch)]
    for single in singles:  # XLA paths compile the single shapes here
        translate(single)
    result = {"first_batch_s": first_batch, "outputs": outputs,
              "first_pass_s": time.perf_counter() - start,
              "sentences_per_s_rounds": [], "latency_ms_rounds": []}  # fmt: skip
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            translate(batch)
        speed = len(sentences) / (time.perf_counter() - start)
        result["sentences_per_s_rounds"].append(speed)
        latency = statistics.median(timed(translate, s)[1] for s in singles)
        result["latency_ms_rounds"].append(1000 * latency)
    if rounds:
        result["sentences_per_s"] = statistics.median(result["sentences_per_s_rounds"])
        result["latency_ms"] = statistics.median(result["latency_ms_rounds"])
    return result


def time_warmup(settings):
    """Replays the export's warm-up requests of `translate_xla` (from
    `tf_serving_warmup_requests_xla`) in this fresh process, twice."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    from tensorflow_serving.apis import prediction_log_pb2

    from keras_transformer.export.saved_model import XLA_WARMUP_FILE

    exported = settings["saved_model"]
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
    return {"requests": len(requests), "first_s": durations[0], "again_s": durations[1]}


def worker_main(name, workdir):
    """One path (or `warmup`) in this fresh process; prints its JSON line."""
    with open(os.path.join(workdir, "settings.json"), encoding="utf-8") as f:
        settings = json.load(f)
    if name == "warmup":
        result = time_warmup(settings)
    else:
        _, import_s = timed(import_libraries, name)
        (translate, compilations), load_s = timed(load_path, name, settings)
        result = measure(translate, settings["sources"],
                         settings["latency_sentences"], settings["rounds"])  # fmt: skip
        result.update(import_s=import_s, load_s=load_s,
                      first_call_s=load_s + result["first_batch_s"],
                      tensorflow_imported="tensorflow" in sys.modules,
                      xla_compilations=compilations() if compilations else None)  # fmt: skip
        if name in CT2_PATHS:
            result["ct2_intra_threads"] = settings["ct2_intra_threads"]
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- main


def run(args, workdir):
    """Prepares, runs the workers; returns the JSON-able record of the run."""
    names = [name for name in PATHS if name not in args.skip]
    sources, references = read_test_set(args.test, args.sentences)
    head, status = git_state()
    record = {"args": {k: sorted(v) if isinstance(v, set) else v
                       for k, v in vars(args).items()},
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "processor": cpu_model(),
                          "load_start": os.getloadavg()},
              "git_head": head, "git_status": status,
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "sentences": len(sources)}  # fmt: skip
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average: {os.getloadavg()}; "
          f"git HEAD {head}; {len(sources)} sentences")  # fmt: skip
    if status:
        print(f"git status --short:\n{status}")
    settings, exported = prepare(args, workdir, names, sources, references)
    record["bleu_tokenize"] = settings["bleu_tokenize"]
    record["preparation"] = settings["preparation"]
    if args.profile:
        record["profile"] = profile(exported)
    if args.warmup:
        warm = run_worker("warmup", workdir, args)
        record["warmup"] = warm
        if warm["status"] == "ok":
            print(f"translate_xla warm-up: {warm['requests']} requests (one XLA "
                  f"compilation each), {warm['first_s']:.1f} s in a fresh process; "
                  f"replayed warm: {warm['again_s']:.1f} s")  # fmt: skip
    results = {}
    if args.rounds >= 1:
        for name in names:
            print(f"running {name} ...", flush=True)
            results[name] = run_worker(name, workdir, args)
        score(results, settings)
        print_table(results)
    record["load_end"] = os.getloadavg()
    print(f"\nload average at the end: {record['load_end']}")
    record["results"] = results
    return record


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.workdir)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        record = run(args, os.path.abspath(args.workdir))
    else:
        with tempfile.TemporaryDirectory() as workdir:
            record = run(args, workdir)
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    failed = [n for n, row in record["results"].items() if row["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
