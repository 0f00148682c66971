"""Measures candidate library optimizations by monkeypatching our layers.

    python benchmarks/experiments.py [--rounds 7] [--only decode,train]

Nothing in `keras_transformer/` is changed. One process per kind builds one
model per variant (same seeded weights) and traces each variant's function
while its patch is applied (`patched()` restores the library afterwards; a
traced graph keeps what it was traced with). The variants then run
interleaved, one call each per round with the order rotated, and the
speed-up is the median of the per-round ratios: a paired comparison that
cancels most of a shared machine's load drift. Outputs are checked equal to
the baseline's.

`decode` (batch 16, source 48, 64 tokens, XLA), greedy variants:

- `baseline`: the library as is.
- `dus`: the cache/token writes use `ops.slice_update` (XLA
  dynamic-update-slice, in place) instead of `layers.utils.dynamic_update`'s
  gather + select over the whole buffer.
- `scatter`: the writes use `tf.tensor_scatter_nd_update` (a core TF op, so
  still servable by stock TF Serving).
- `heads_major`: `dus`, plus caches laid out `(B, 2, heads, length, d_k)`
  so attention over the cache needs no transpose of the whole cache at every
  step (the cross-attention keys/values are transposed once, up front).
  XLA still copies `cache[:, 0]` / `cache[:, 1]` out of the stacked buffer.
- `split_kv`: `heads_major` with separate key and value buffers
  `(B, heads, length, d_k)` per layer (a `(key, value)` pair), so the
  attention matmuls read the cache where it is: no per-step copy at all.

beam 4 variants: `baseline`, `split_kv`, `topk2` (beam search's top-k over
the `K * V` candidates done in two stages: top 2K per beam, then top 2K of
the `K * 2K`; the same selection) and `split_kv+topk2`. keras-hub's cached
greedy search runs in the same interleaved set, so the issue's decoding
ratios are also measured paired.

`train` (XLA, fp32, the fixed batch of compare.py): `baseline`,
`no_dropout` (dropout 0: what dropout's random bits and masks cost) and
keras-hub's model, interleaved step by step.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import DECODE  # noqa: E402
from _common import RESULT_MARKER  # noqa: E402
from _common import count_tokens  # noqa: E402
from _common import decode_source  # noqa: E402
from _common import emit  # noqa: E402
from _common import training_batch  # noqa: E402

GREEDY_VARIANTS = ("baseline", "dus", "scatter", "heads_major", "split_kv")
BEAM_VARIANTS = ("baseline", "split_kv", "topk2", "split_kv+topk2")
TRAIN_VARIANTS = ("baseline", "no_dropout")


# ---------------------------------------------------------------------------
# Patches.


def slice_update_write(tensor, update, index, axis):
    """`dynamic_update` with `ops.slice_update` (XLA dynamic-update-slice)."""
    from keras import ops

    rank = len(tensor.shape)
    start = [0] * rank
    start[axis % rank] = ops.cast(index, "int32")
    return ops.slice_update(tensor, start, ops.cast(update, tensor.dtype))


def scatter_write(tensor, update, index, axis):
    """`dynamic_update` with `tf.tensor_scatter_nd_update` along `axis`."""
    import tensorflow as tf

    axis = axis % len(tensor.shape)
    perm = [axis] + [i for i in range(len(tensor.shape)) if i != axis]
    inverse = [perm.index(i) for i in range(len(perm))]
    count = tf.shape(update)[axis]
    positions = tf.cast(index, tf.int32) + tf.range(count)
    moved = tf.transpose(tensor, perm)
    updates = tf.transpose(tf.cast(update, tensor.dtype), perm)
    if axis == 0:
        return tf.tensor_scatter_nd_update(tensor, positions[:, None], updates)
    moved = tf.tensor_scatter_nd_update(moved, positions[:, None], updates)
    return tf.transpose(moved, inverse)


def patch_writes(write):
    # `keras_transformer.decoding` re-exports functions under the module
    # names, so `import ... as` would bind the functions: use the modules.
    import importlib

    names = (
        "keras_transformer.layers.multi_head_attention",
        "keras_transformer.decoding.greedy_search",
        "keras_transformer.decoding.beam_search",
    )
    for module in map(importlib.import_module, names):
        module.dynamic_update = write


class _TupleTakeOps:
    """`keras.ops` whose `take` maps over a `(key, value)` cache tuple."""

    def __getattr__(self, name):
        from keras import ops

        return getattr(ops, name)

    def take(self, x, indices, axis=None):
        from keras import ops

        if isinstance(x, tuple | list):  # Keras may hand the pair back as a list
            return tuple(ops.take(t, indices, axis=axis) for t in x)
        return ops.take(x, indices, axis=axis)


class _TwoStageTopKOps(_TupleTakeOps):
    """`keras.ops` whose `top_k` over `(B, K * V)` beam candidates is two-stage.

    The best `k` of the `K * V` extensions are among each beam's own best `k`
    (a beam's score shifts its whole row), so a top-k per beam row `(B, K, V)`
    then a top-k over the `K * k` survivors selects the same candidates with
    far smaller sorts. Other `top_k` calls pass through.
    """

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary

    def top_k(self, x, k, sorted=True):
        from keras import ops

        n, vocabulary = x.shape[-1], self.vocabulary
        if n is None or n <= vocabulary or n % vocabulary:
            return ops.top_k(x, k, sorted=sorted)
        beams = n // vocabulary
        values, tokens = ops.top_k(ops.reshape(x, (-1, beams, vocabulary)), k)
        best, pick = ops.top_k(ops.reshape(values, (-1, beams * k)), k)
        tokens = ops.take_along_axis(
            ops.reshape(tokens, (-1, beams * k)), pick, axis=-1
        )
        return best, ops.cast(pick // k, tokens.dtype) * vocabulary + tokens


def patch_two_stage_topk(vocabulary=8192):
    import importlib

    beam_search = importlib.import_module("keras_transformer.decoding.beam_search")
    beam_search.ops = _TwoStageTopKOps(vocabulary)


def patch_cache_layout(split):
    """Heads-major caches: `(B, 2, H_kv, length, d_k)`, or with `split` a
    `(key, value)` pair of `(B, H_kv, length, d_k)` buffers."""
    import importlib
    import math

    from keras import ops

    beam_search = importlib.import_module("keras_transformer.decoding.beam_search")

    from keras_transformer.layers import decoder as decoder_module
    from keras_transformer.layers import multi_head_attention as mha

    patch_writes(slice_update_write)
    MHA = mha.MultiHeadAttention
    original_call = MHA.call

    def compute_key_value_cache(self, value, key=None):
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), self._kv_heads, self.key_dim)
        v = self._split_heads(self.value_dense(value), self._kv_heads, self.key_dim)
        if split:
            return (ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3)))
        return ops.transpose(ops.stack([k, v], axis=1), (0, 1, 3, 2, 4))

    def init_cache(self, batch_size, max_length, encoder_outputs=None):
        attention = self.blocks[0].self_attention
        shape = (
            batch_size,
            2,
            attention.num_key_value_heads or attention.num_heads,
            max_length,
            attention.key_dim,
        )
        if split:
            shape = shape[:1] + shape[2:]
            self_cache = [
                (
                    ops.zeros(shape, self.compute_dtype),
                    ops.zeros(shape, self.compute_dtype),
                )
                for _ in self.blocks
            ]
        else:
            self_cache = [ops.zeros(shape, self.compute_dtype) for _ in self.blocks]
        cache = {"self": self_cache, "cross": []}
        if self.has_cross_attention:
            cache["cross"] = [
                block.compute_cross_attention_cache(encoder_outputs)
                for block in self.blocks
            ]
        return cache

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        query_mask=None,
        value_mask=None,
        causal=False,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        if cache is None:
            return original_call(
                self,
                query,
                value=value,
                key=key,
                attention_mask=attention_mask,
                query_mask=query_mask,
                value_mask=value_mask,
                causal=causal,
                return_attention_scores=return_attention_scores,
                training=training,
            )
        if self.num_heads != self._kv_heads or (
            getattr(self, "rotary_max_wavelength", None)
            or getattr(self, "max_relative_position", None)
        ):
            raise NotImplementedError("experiment covers plain MHA + sinusoidal PE")
        H, dk = self.num_heads, self.key_dim
        if self.is_self_attention:
            qkv = self.query_key_value_dense(query)
            q, k, v = ops.split(qkv, [H * dk, 2 * H * dk], axis=-1)
            q = self._split_heads(q, H, dk)
            k = ops.transpose(self._split_heads(k, H, dk), (0, 2, 1, 3))
            v = ops.transpose(self._split_heads(v, H, dk), (0, 2, 1, 3))
            if split:  # (B, H, T, dk) into (B, H, S_max, dk) buffers
                cache = (
                    mha.dynamic_update(cache[0], k, cache_index, axis=2),
                    mha.dynamic_update(cache[1], v, cache_index, axis=2),
                )
            else:  # (B, 2, H, T, dk) into (B, 2, H, S_max, dk)
                update = ops.stack([k, v], axis=1)
                cache = mha.dynamic_update(cache, update, cache_index, axis=3)
        else:
            q = self._split_heads(self.query_dense(query), H, dk)
        if split:
            k, v = cache
        else:
            k, v = cache[:, 0], cache[:, 1]  # (B, H, S, dk)
        query_length, key_length = ops.shape(q)[1], ops.shape(k)[2]
        causal_part = None
        if self.is_self_attention:
            offset = ops.cast(cache_index, "int32")
            causal_part = mha.causal_mask(query_length, key_length, offset)
        mask = mha.merge_masks(attention_mask, query_mask, value_mask, causal_part)
        q = q * ops.cast(1.0 / math.sqrt(dk), q.dtype)
        scores = ops.cast(ops.einsum("bthd,bhsd->bhts", q, k), "float32")
        if mask is not None:
            scores = ops.where(mask, scores, mha._MASKED_SCORE)
        weights = ops.softmax(scores, axis=-1)
        if mask is not None:
            weights = ops.where(ops.any(mask, axis=-1, keepdims=True), weights, 0.0)
        probs = self.dropout_layer(
            ops.cast(weights, self.compute_dtype), training=training
        )
        context = ops.einsum("bhts,bhsd->bthd", probs, v)
        context = ops.reshape(
            context, (ops.shape(context)[0], query_length, H * self._value_dim)
        )
        outputs = (self.output_dense(context),)
        if return_attention_scores:
            outputs += (weights,)
        return outputs + (cache,)

    MHA.compute_key_value_cache = compute_key_value_cache
    MHA.call = call
    decoder_module.Decoder.init_cache = init_cache
    if split and not isinstance(beam_search.ops, _TupleTakeOps):
        beam_search.ops = _TupleTakeOps()


def apply_patch(variant):
    """Applies a variant's patches globally; `a+b` applies both.

    Also used by `profile_ours.py --variant`.
    """
    for name in variant.split("+"):
        if name in ("baseline", "no_dropout"):
            continue
        if name == "dus":
            patch_writes(slice_update_write)
        elif name == "scatter":
            patch_writes(scatter_write)
        elif name == "heads_major":
            patch_cache_layout(split=False)
        elif name == "split_kv":
            patch_cache_layout(split=True)
        elif name == "topk2":
            patch_two_stage_topk()
        else:
            raise ValueError(name)


@contextlib.contextmanager
def patched(variant):
    """Applies `variant`'s patch, then restores the library exactly.

    Patches only matter while a function is traced: a model whose
    `generate()` (or train step) was first called inside this block keeps the
    patched graph afterwards, so patched and unpatched models can run side by
    side in one process.
    """
    import importlib

    from keras_transformer.layers import decoder as decoder_module
    from keras_transformer.layers import multi_head_attention as mha

    modules = [
        importlib.import_module(f"keras_transformer.{name}")
        for name in (
            "layers.multi_head_attention",
            "decoding.greedy_search",
            "decoding.beam_search",
        )
    ]
    saved = {
        "writes": [m.dynamic_update for m in modules],
        "beam_ops": modules[2].ops,
        "call": mha.MultiHeadAttention.call,
        "kv_cache": mha.MultiHeadAttention.compute_key_value_cache,
        "init_cache": decoder_module.Decoder.init_cache,
    }
    apply_patch(variant)
    try:
        yield
    finally:
        for module, write in zip(modules, saved["writes"]):
            module.dynamic_update = write
        modules[2].ops = saved["beam_ops"]
        mha.MultiHeadAttention.call = saved["call"]
        mha.MultiHeadAttention.compute_key_value_cache = saved["kv_cache"]
        decoder_module.Decoder.init_cache = saved["init_cache"]


# ---------------------------------------------------------------------------
# Paired, interleaved measurements (one process per kind).


def interleave(functions, rounds):
    """Times each function once per round, rotating the order every round.

    Returns `{name: [seconds per round]}`. Comparing variants round by round
    (a paired comparison) cancels most of a shared machine's load drift.
    """
    names = list(functions)
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summarize_pairs(times, baseline="baseline"):
    """Median time per variant and median per-round speed-up vs baseline."""
    out = {}
    for name, values in times.items():
        ratios = [b / v for b, v in zip(times[baseline], values)]
        out[name] = {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "speedup_median": statistics.median(ratios),
            "speedup_min_time": min(times[baseline]) / min(values),
            "times_s": values,
        }
    return out


def run_decode(rounds):
    """Greedy and beam variants, and keras-hub's cached greedy, interleaved."""
    import _keras_systems as ks
    import numpy as np
    import tensorflow as tf

    source = tf.constant(decode_source())
    new_tokens = DECODE["new_tokens"]
    functions, outputs = {}, {}
    variants = [("greedy", v) for v in GREEDY_VARIANTS]
    variants += [("beam", v) for v in BEAM_VARIANTS]
    for kind, variant in variants:
        model = ks.build_ours()  # seeded: the same weights for every variant
        beam = DECODE["beam_size"] if kind == "beam" else 1

        def run(model=model, beam=beam):
            return model.generate(source, max_length=new_tokens, beam_size=beam).numpy()

        with patched(variant):
            outputs[f"{kind}/{variant}"] = run()  # traced with the patch
        run()
        functions[f"{kind}/{variant}"] = run
    hub = ks.build_keras_hub()
    hub_fn = tf.function(
        lambda s: ks.keras_hub_greedy_cached(hub, s, new_tokens),
        jit_compile=True,
        autograph=False,
    )
    hub_fn(source).numpy()
    functions["keras_hub_cached"] = lambda: hub_fn(source).numpy()

    times = interleave(functions, rounds)
    result = {}
    for kind in ("greedy", "beam"):
        subset = {
            name.split("/", 1)[1]: values
            for name, values in times.items()
            if name.startswith(kind + "/")
        }
        result[kind] = summarize_pairs(subset)
        for variant, row in result[kind].items():
            row["same_ids_as_baseline"] = bool(
                np.array_equal(
                    outputs[f"{kind}/{variant}"], outputs[f"{kind}/baseline"]
                )
            )
            row["ms_per_step"] = 1000 * row["median_s"] / new_tokens
    # Paired ratios behind the decoding targets.
    result["ratios"] = {}
    for variant in GREEDY_VARIANTS:
        result["ratios"][f"greedy {variant} vs keras-hub cached (speed-up)"] = (
            statistics.median(
                h / o
                for h, o in zip(times["keras_hub_cached"], times[f"greedy/{variant}"])
            )
        )
    for variant in BEAM_VARIANTS:
        greedy = "split_kv" if "split_kv" in variant else "baseline"
        result["ratios"][
            f"beam {variant} vs greedy {greedy} per sentence (cost ratio)"
        ] = statistics.median(
            b / g for b, g in zip(times[f"beam/{variant}"], times[f"greedy/{greedy}"])
        )
    result["keras_hub_cached_ms_per_step"] = (
        1000 * statistics.median(times["keras_hub_cached"]) / new_tokens
    )
    return result


def run_train(rounds):
    import _keras_systems as ks

    batch = training_batch()
    x, y = ks.keras_inputs(batch)
    functions = {}
    for variant in TRAIN_VARIANTS:
        dropout = 0.0 if variant == "no_dropout" else 0.1
        model = ks.build_ours(dropout=dropout)
        ks.compile_for_training(model, True)
        for _ in range(3):
            model.train_on_batch(x, y)
        functions[variant] = lambda model=model: model.train_on_batch(x, y)
    hub = ks.build_keras_hub()
    ks.compile_for_training(hub, True)
    for _ in range(3):
        hub.train_on_batch(x, y)
    functions["keras_hub_xla"] = lambda: hub.train_on_batch(x, y)
    result = summarize_pairs(interleave(functions, rounds))
    tokens = count_tokens(batch["target_out"])
    for row in result.values():
        row["tokens_per_s"] = tokens / row["median_s"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--only", default="decode,train")
    parser.add_argument("--output", default=None, help="JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind = args.child
        if kind == "train":
            emit({"train": run_train(args.rounds * 2)})
        else:
            emit(run_decode(args.rounds))
        return 0

    summary = {}
    for kind in [k for k in args.only.split(",") if k]:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--rounds",
            str(args.rounds),
        ]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_MARKER):
                result = json.loads(line[len(RESULT_MARKER) :])
        if result is None:
            print(f"{kind}: failed\n{proc.stderr[-3000:]}")
            continue
        summary[kind] = result
        print(
            f"\n{kind} ({time.perf_counter() - start:.0f}s, load "
            f"{load:.2f} -> {os.getloadavg()[0]:.2f})"
        )
        for group, rows in result.items():
            if group == "ratios":
                for name, value in rows.items():
                    print(f"  {name}: {value:.2f}")
                continue
            if not isinstance(rows, dict):
                print(f"  {group}: {rows:.2f}")
                continue
            print(f"  {group}: median per variant; median per-round speed-up")
            for variant, row in rows.items():
                extra = ""
                if "same_ids_as_baseline" in row:
                    extra = f"  same ids: {row['same_ids_as_baseline']}"
                per = (
                    f"{row['ms_per_step']:7.2f} ms/step"
                    if "ms_per_step" in row
                    else f"{row['tokens_per_s']:7.0f} tok/s"
                )
                print(
                    f"    {variant:15s} {1000 * row['median_s']:9.1f} ms  {per}  "
                    f"x{row['speedup_median']:4.2f} (min-time x"
                    f"{row['speedup_min_time']:4.2f}){extra}"
                )
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
