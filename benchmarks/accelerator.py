"""Accelerator readiness: the paper's base Transformer on a GPU, a TPU or a CPU.

Runs on the device TensorFlow sees (a Cloud TPU with `--tpu`, through
`keras_transformer.training.get_strategy("tpu")`): the `base` preset
(`--preset big`), a shared 37,000-token vocabulary, XLA, and
`mixed_bfloat16` on TPUs and GPUs of compute capability >= 8.0,
`mixed_float16` below 8.0, `float32` on CPUs (`--policy` overrides).

- peak: chains of n x n matmuls (n = 8192) in the compute dtype, XLA, k and
  2k links (k = 20), best of 5: peak = replicas * 2 n^3 k / (t(2k) - t(k))
  (2 n^3 2k / t(2k) if t(2k)/t(k) is outside [1.5, 2.5]); measured before
  and after training, the larger is the MFU's denominator.
- training (`fit`, label smoothing 0.1, the paper's Adam schedule): steps/s,
  real (non-pad) target tokens/s, MFU, HFU, peak device memory
  (`tf.config.experimental.get_memory_info`, null on CPUs) and hours for
  the paper's 100,000 base steps (at this batch, and at 25,000 real tokens).
- decoding: `model.generate` (XLA) greedy and beam-4 latency at batch 1 and
  sentences/s at batch 64, sources of 30 tokens, max length input + 50.
  The model's `eos_id` is an id absent from the data, so every search runs
  all 80 steps (the worst case, the same on every device).
- export: a SentencePiece model trained on synthetic words, a same-preset
  model over its (smaller, ~8k) vocabulary, `export.Translator` saved by
  `export_translator` and reloaded: sentences/s of its greedy and beam-4
  signatures for 64 sentences (graph mode, no XLA, as TF Serving runs it).

Data (synthetic, WMT14 en-de-like): source length ~ LogNormal(3.2, 0.55)
(median 24.5, mean 28.5 subwords), target = source * LogNormal(0.05, 0.15),
clipped to [1, 127], ids uniform; `data.make_dataset(batch_tokens=25000,
bucket_by="longest")` with `DEFAULT_BOUNDARIES` up to 128: <= 25,000 padded
tokens per side and batch, static shapes. Of its first 40 batches the 3
most frequent shapes are kept (one XLA compilation each); 3 warm-up steps
(one per shape), then 10 timed steps (`--shapes`, `--warmup`, `--steps`).

FLOPs (matmuls, 2 per multiply-add, dense attention incl. the masked causal
half; d model, f d_ff, N/M encoder/decoder layers, V vocabulary) of a pair
of source length s and target length t, train = 3 x forward:
    forward = 2 [N (s (4d^2 + 2df) + 2 s^2 d)
                 + M (t (6d^2 + 2df) + 2 s d^2 + 2 t (t + s) d) + t d V]
i.e. 6 x weights x tokens + attention terms. MFU sums it over each
sentence's real lengths; HFU over the padded batch shape.

    export TF_CPP_MIN_LOG_LEVEL=3
    python benchmarks/accelerator.py                      # GPU machine
    python benchmarks/accelerator.py --preset big
    python benchmarks/accelerator.py --tpu local          # Cloud TPU VM
    python benchmarks/accelerator.py --smoke              # CPU, < 1 minute

`--output PATH` (default `accelerator_results.json`). A part that fails is
`{"error": ...}` in the JSON and the run goes on.
"""

import argparse
import collections
import functools
import json
import os
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from _common import forward_flops
from _common import time_calls
from _pipelines import id_tokenize

import keras_transformer
from keras_transformer import data
from keras_transformer import export
from keras_transformer import text
from keras_transformer import training
from keras_transformer import utils

FULL = dict(vocab=37000, batch_tokens=25000, max_length=128, mu=3.2, sigma=0.55,
            warmup=3, steps=10, shapes=3, pool=40, pairs=20000, source_length=30,
            extra=50, decode_batch=64, repeats=5, matmul=8192, links=20,
            spm_vocab=8000, spm_sentences=20000, model={})  # fmt: skip
SMOKE = dict(vocab=1000, batch_tokens=1024, max_length=32, mu=2.3, sigma=0.5,
             warmup=1, steps=3, shapes=1, pool=8, pairs=2000, source_length=8,
             extra=8, decode_batch=8, repeats=2, matmul=512, links=8,
             spm_vocab=200, spm_sentences=1000,
             model=dict(num_layers=1, d_model=64, num_heads=2, d_ff=128))  # fmt: skip
DATA_EOS = 3  # keras_transformer.special_tokens.EOS_ID, appended by make_dataset
FLOP_FORMULA = (
    "train = 3 * forward; forward = 2 * [N (s (4d^2 + 2df) + 2 s^2 d) + "
    "M (t (6d^2 + 2df) + 2 s d^2 + 2 t (t + s) d) + t d V] per sentence pair"
)


def parse_args(argv=None):
    """The command line; `args.sizes` is the mode's sizes with overrides."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="base (default), big; tiny with --smoke")
    parser.add_argument("--tpu", help="'local' on a TPU VM, a TPU name or grpc://")
    parser.add_argument("--policy", default="auto")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU")
    parser.add_argument("--output", default="accelerator_results.json")
    parser.add_argument("--skip", default="", help="e.g. export,decoding")
    parser.add_argument("--seed", type=int, default=0)
    for name in ("steps", "warmup", "shapes"):
        parser.add_argument(f"--{name}", type=int)
    args = parser.parse_args(argv)
    args.sizes = dict(SMOKE if args.smoke else FULL)
    for name in ("steps", "warmup", "shapes"):
        args.sizes[name] = getattr(args, name) or args.sizes[name]
    args.preset = args.preset or ("tiny" if args.smoke else "base")
    return args


def setup_device(tpu, policy):
    """`(strategy, device facts)`; the facts include the dtype policy."""
    strategy = training.get_strategy("tpu" if tpu else "default", tpu=tpu)
    info = {"kind": "CPU", "name": platform.processor() or platform.machine()}
    gpus, capability = tf.config.list_physical_devices("GPU"), [0, 0]
    if tpu:
        info = {"kind": "TPU", "name": f"{tpu}: {strategy.num_replicas_in_sync} cores"}
    elif gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = list(details.get("compute_capability") or (0, 0))
        info = {"kind": "GPU", "name": details.get("device_name", "GPU"),
                "compute_capability": capability}  # fmt: skip
    if policy == "auto":
        policy = {"TPU": "mixed_bfloat16", "CPU": "float32"}.get(info["kind"])
        policy = policy or (
            "mixed_bfloat16" if capability >= [8, 0] else "mixed_float16"
        )
    return strategy, {
        **info,
        "replicas": strategy.num_replicas_in_sync,
        "policy": policy,
    }


def forward_macs(model, s, t):
    """Forward multiply-adds for source lengths `s`, target lengths `t`:
    `_common.forward_flops` / 2 with the model's sizes."""
    names = ("d_model", "d_ff", "num_layers", "num_decoder_layers")
    config = {name: getattr(model, name) for name in names}
    config["vocabulary_size"] = model.output_vocabulary_size
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    return forward_flops(1, s, t, config)["total"] / 2


def matmul_peak(strategy, dtype, n, links, repeats=5):
    """Matmul FLOP/s of all replicas, from chains of `links`, `2 * links`."""

    @tf.function(jit_compile=True)
    def chain(x, w, count):
        body = lambda i, y: (i + 1, tf.matmul(y, w))
        y = tf.while_loop(lambda i, _: i < count, body, (0, x))[1]
        return tf.reduce_sum(tf.cast(y[:1], tf.float32))

    @tf.function
    def run(count):
        def replica():
            x = tf.random.normal([n, n], dtype=tf.float32)
            w = tf.random.normal([n, n], stddev=n**-0.5)
            return chain(tf.cast(x, dtype), tf.cast(w, dtype), count)

        return strategy.reduce("SUM", strategy.run(replica), axis=None)

    timed = {}
    for count in (links, 2 * links):
        run(tf.constant(count)).numpy()  # compile
        timed[count] = min(
            time_calls(lambda c=count: run(tf.constant(c)).numpy(), repeats)
        )
    flops = strategy.num_replicas_in_sync * 2.0 * n**3 * links
    short, long = timed[links], timed[2 * links]
    # The difference drops fixed costs; if noise makes it implausible, the
    # whole chain (a lower bound of the peak) is used.
    peak = flops / (long - short) if 1.5 <= long / short <= 2.5 else 2 * flops / long
    return {"n": n, "dtype": dtype, "seconds": timed, "flops_per_s": peak}


def synthetic_pairs(sizes, seed):
    """WMT14 en-de-like `(source, target)` strings of space-separated ids."""
    rng = np.random.default_rng(seed)
    count, top = sizes["pairs"], sizes["max_length"] - 1
    source = np.rint(rng.lognormal(sizes["mu"], sizes["sigma"], count))
    target = np.rint(source * rng.lognormal(0.05, 0.15, count))
    lengths = np.clip(np.stack([source, target], 1), 1, top).astype(int)
    ids = rng.integers(4, sizes["vocab"] - 1, size=(count, 2, top)).astype(str)
    return [(" ".join(ids[i, 0, : lengths[i, 0]]), " ".join(ids[i, 1, : lengths[i, 1]]))
            for i in range(count)]  # fmt: skip


def make_batches(sizes, replicas, seed):
    """Data facts, and `"batches"`: warm-up then timed, from `make_dataset`."""
    dataset = data.make_dataset(
        synthetic_pairs(sizes, seed), id_tokenize, id_tokenize,
        batch_tokens=sizes["batch_tokens"], max_source_length=sizes["max_length"],
        max_target_length=sizes["max_length"], bucket_by="longest",
        shuffle=False, repeat=True,
    )  # fmt: skip
    pool = []
    for inputs, target_out in dataset.take(sizes["pool"]).as_numpy_iterator():
        rows = len(target_out) - len(target_out) % replicas  # even replica shares
        pool.append(({k: v[:rows] for k, v in inputs.items()}, target_out[:rows]))
    shape = lambda batch: batch[1].shape
    counts = collections.Counter(map(shape, pool))
    top = [key for key, _ in counts.most_common(sizes["shapes"])]
    kept = [batch for batch in pool if shape(batch) in top]
    first = [next(batch for batch in kept if shape(batch) == key) for key in top]
    more = max(0, sizes["warmup"] - len(first)) + sizes["steps"]
    batches = first + [kept[i % len(kept)] for i in range(more)]
    real = lambda batches: sum(int(np.count_nonzero(b[1])) for b in batches)
    timed = batches[-sizes["steps"] :]
    return {
        "pool_batches": len(pool), "shape_counts": {str(k): n for k, n in counts.items()},
        "shapes_kept": [list(key) for key in top],
        "kept_real_token_fraction": real(kept) / max(1, real(pool)),
        "timed_padding_fraction": 1 - real(timed) / sum(b[1].size for b in timed),
        "bucket_lengths": data.bucket_lengths(sizes["max_length"]), "batches": batches,
    }  # fmt: skip


class StepTimer(keras.callbacks.Callback):
    """Wall time at the end of each training step (reading the loss syncs)."""

    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.ends.append(time.perf_counter())


def device_memory(kind, reset=False):
    """Peak bytes allocated on the first GPU/TPU (`None` where unavailable)."""
    if kind == "CPU":  # host memory: not what this measures
        return None
    try:
        if reset:
            return tf.config.experimental.reset_memory_stats(f"{kind}:0")
        return int(tf.config.experimental.get_memory_info(f"{kind}:0")["peak"])
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def train(model, batches, steps, kind):
    """Fits on `batches`; the last `steps` steps are timed."""
    datasets = [tf.data.Dataset.from_tensors(batch) for batch in batches]
    dataset = functools.reduce(lambda a, b: a.concatenate(b), datasets)
    timer = StepTimer()
    device_memory(kind, reset=True)
    model.fit(dataset, steps_per_epoch=len(batches), verbose=0, shuffle=False,
              callbacks=[timer])  # fmt: skip
    total, timed = float(np.diff(timer.ends)[-steps:].sum()), batches[-steps:]
    real = lambda ids: np.count_nonzero(ids, axis=1)
    tokens = sum(int(np.count_nonzero(target)) for _, target in timed)
    model_flops = sum(6 * forward_macs(model, real(x["source"]), real(y)).sum()
                      for x, y in timed)  # fmt: skip
    padded_flops = sum(6 * len(y) * forward_macs(model, x["source"].shape[1], y.shape[1])
                       for x, y in timed)  # fmt: skip
    memory = device_memory(kind)
    return {
        "timed_steps": steps, "step_seconds": np.diff(timer.ends)[-steps:].tolist(),
        "steps_per_s": steps / total, "real_target_tokens_per_s": tokens / total,
        "real_target_tokens_per_step": tokens / steps, "flop_formula": FLOP_FORMULA,
        "model_flops_per_s": model_flops / total,
        "padded_flops_per_s": padded_flops / total, "peak_memory_bytes": memory,
        "peak_memory_note": None if memory else f"get_memory_info: none on {kind}",
        "estimated_100k_steps_hours": 1e5 * total / steps / 3600,
        "estimated_100k_steps_hours_at_25k_real_tokens": 25e8 * total / tokens / 3600,
    }  # fmt: skip


def decode(model, sizes, seed):
    """Greedy and beam-4 `generate`: batch-1 latency, batch-N sentences/s."""
    rng = np.random.default_rng(seed)
    length, results = sizes["source_length"], {}
    for beam in (1, 4):
        for batch in (1, sizes["decode_batch"]):
            source = rng.integers(4, model.vocabulary_size - 1, (batch, length))
            source[:, -1] = DATA_EOS
            source = source.astype("int32")
            call = lambda s=source, b=beam: model.generate(
                s, max_length=length + sizes["extra"], beam_size=b, jit_compile=True
            ).numpy()
            ids = call()  # compile
            seconds = min(time_calls(call, sizes["repeats"]))
            results[f"{'greedy' if beam == 1 else 'beam4'}_batch{batch}"] = {
                "seconds": seconds, "sentences_per_s": batch / seconds,
                "output_length": int(ids.shape[-1]), "source_length": length,
            }  # fmt: skip
    return results


def export_throughput(preset, sizes, seed):
    """Exports a SentencePiece `Translator`; times its reloaded signatures."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lexicon = ["".join(rng.choice(letters, k)) for k in rng.integers(2, 9, 2000)]
    words = lambda n: " ".join(rng.choice(lexicon, n))
    corpus = [words(n) for n in rng.integers(5, 40, sizes["spm_sentences"])]
    tokenizer = text.SubwordTokenizer(
        text.train_sentencepiece(corpus, sizes["spm_vocab"])
    )
    vocab = tokenizer.vocab_size
    model = keras_transformer.Transformer.from_preset(
        preset, vocabulary_size=vocab, eos_id=vocab - 1, **sizes["model"]
    )
    translator = export.Translator(
        model, tokenizer, tokenizer, beam_size=4, max_extra_length=sizes["extra"]
    )
    batch = tf.constant([words(sizes["source_length"] - 1)] * sizes["decode_batch"])
    tokens = tokenizer.tokenize(batch).row_lengths().numpy() + 1  # + EOS
    results = {"vocabulary_size": vocab, "source_tokens_mean": float(tokens.mean())}
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        loaded = tf.saved_model.load(export.export_translator(translator, directory))
        results["export_and_load_seconds"] = time.perf_counter() - start
        for signature in ("translate_greedy", "serving_default"):
            call = lambda f=loaded.signatures[signature]: f(sentences=batch)["scores"]
            call().numpy()
            seconds = min(
                time_calls(lambda c=call: c().numpy(), min(3, sizes["repeats"]))
            )
            results[signature] = {"seconds": seconds,
                                  "sentences_per_s": len(tokens) / seconds}  # fmt: skip
    return results


def section(results, name, function, *args):
    """Runs one part; a failure becomes `{"error": ...}` and the run goes on."""
    start = time.perf_counter()
    try:
        results[name] = function(*args)
    except Exception as error:  # noqa: BLE001 - every failure is reported
        results[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    results["seconds"][name] = round(time.perf_counter() - start, 2)
    return results[name]


def build_model(preset, vocab, strategy, overrides):
    """The preset under `strategy`, compiled for XLA with the paper's training."""
    with strategy.scope():
        # An end id outside the data: every search decodes to its max length.
        model = keras_transformer.Transformer.from_preset(
            preset, vocabulary_size=vocab, eos_id=vocab - 1, **overrides
        )
        model.compile(
            optimizer=training.transformer_optimizer(model.d_model),
            loss=training.LabelSmoothedCrossEntropy(label_smoothing=0.1),
            jit_compile=True,
        )
    return model


def add_utilization(results):
    """MFU and HFU against the larger matmul peak (before or after training)."""
    peaks = [results[name].get("flops_per_s") for name in ("peak_matmul", "peak_after")]
    peak = results["peak_flops_per_s"] = max(filter(None, peaks), default=None)
    trained = results["training"]
    if peak and "model_flops_per_s" in trained:
        trained["mfu"] = trained["model_flops_per_s"] / peak
        trained["hfu"] = trained["padded_flops_per_s"] / peak


TABLE = (("peak matmul TFLOP/s", "peak_flops_per_s", 1e-12),
         ("train steps/s", "training.steps_per_s", 1),
         ("train real target tokens/s", "training.real_target_tokens_per_s", 1),
         ("train MFU / HFU (padded)", "training.mfu training.hfu", 1),
         ("peak device memory GiB", "training.peak_memory_bytes", 2**-30),
         ("100k steps, hours", "training.estimated_100k_steps_hours", 1),
         ("generate greedy / beam-4, batch 1 ms",
          "decoding.greedy_batch1.seconds decoding.beam4_batch1.seconds", 1e3),
         ("generate greedy / beam-4, batch {N} sent/s", "decoding.greedy_batch{N}."
          "sentences_per_s decoding.beam4_batch{N}.sentences_per_s", 1),
         ("SavedModel greedy / beam-4, batch {N} sent/s", "export.translate_greedy."
          "sentences_per_s export.serving_default.sentences_per_s", 1),
         ("total run seconds", "seconds.total", 1))  # fmt: skip


def lookup(results, path, scale):
    """`"a.b.c"` in `results`, scaled and formatted, or why it is missing."""
    value = results
    for key in path.split("."):
        if isinstance(value, dict) and ("error" in value or "skipped" in value):
            return "error" if "error" in value else "skipped"
        value = value.get(key) if isinstance(value, dict) else None
    return "n/a" if value is None else f"{value * scale:,.4g}"


def print_table(results):
    """The headline numbers, one row each."""
    device, batch = results["device"], str(results["sizes"]["decode_batch"])
    print(f"\n{device['kind']} {device['name']} x{device['replicas']}, "
          f"preset {results['preset']}, {device['policy']}, XLA, "
          f"cpu_tuned_paths={results['cpu_tuned_paths']}")  # fmt: skip
    for label, paths, scale in TABLE:
        label, paths = label.replace("{N}", batch), paths.replace("{N}", batch)
        values = " / ".join(lookup(results, path, scale) for path in paths.split())
        print(f"  {label:<44} {values:>20}")


def main(argv=None):
    args = parse_args(argv)
    start, sizes = time.perf_counter(), args.sizes
    keras.utils.set_random_seed(args.seed)
    strategy, device = setup_device(args.tpu, args.policy)
    keras.config.set_dtype_policy(device["policy"])
    results = {
        "benchmark": "accelerator", "smoke": args.smoke, "device": device,
        "preset": args.preset, "vocabulary_size": sizes["vocab"],
        "policy": device["policy"], "jit_compile": True,
        "cpu_tuned_paths": utils.cpu_tuned_paths(), "sizes": sizes, "seconds": {},
        "versions": {"keras_transformer": keras_transformer.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__},
    }  # fmt: skip
    dtype = keras.mixed_precision.Policy(device["policy"]).compute_dtype
    peak = (matmul_peak, strategy, dtype, sizes["matmul"], sizes["links"])
    section(results, "peak_matmul", *peak)
    section(results, "data", make_batches, sizes, device["replicas"], args.seed)
    batches = results["data"].pop("batches", None)
    model = section(results, "model", build_model, args.preset, sizes["vocab"],
                    strategy, sizes["model"])  # fmt: skip
    results["model"] = model if isinstance(model, dict) else {"built": True}
    parts = {
        "training": (train, model, batches, sizes["steps"], device["kind"]),
        "decoding": (decode, model, sizes, args.seed),
        "export": (export_throughput, args.preset, sizes, args.seed),
    }
    for name, (function, *inputs) in parts.items():
        if name in args.skip.split(","):
            results[name] = {"skipped": True}
        else:
            section(results, name, function, *inputs)
    section(results, "peak_after", *peak)
    add_utilization(results)
    if getattr(model, "built", False):
        results["model"]["parameters"] = model.count_params()
    results["seconds"]["total"] = round(time.perf_counter() - start, 2)
    print_table(results)
    with open(args.output, "w") as file:
        json.dump(results, file, indent=2, default=str)
    print(f"\nwrote {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()
