"""Measures library optimizations paired, by monkeypatching our layers.

    python benchmarks/experiments.py [--rounds 7] [--only decode,train,loss,real_rows_loss,e2e]

Nothing in `keras_transformer/` is changed. One process per kind builds one
model per variant (same seeded weights) and traces each variant's function
while its patch is applied (`patched()` restores the library afterwards; a
traced graph keeps what it was traced with). The variants then run
interleaved, one call each per round with the order rotated, and the
speed-up is the median of the per-round ratios: a paired comparison that
cancels most of a shared machine's load drift. Outputs are checked equal to
the baseline's.

The baseline is the library as it is now: the decoding caches are separate
heads-major key/value buffers `(B, H_kv, L, d_k)` per layer, written in
place under XLA (`ops.slice_update`); beam search shares one cross-attention
key/value row per source sentence among its beams, keeps its self-attention
keys/values in beam caches that never move (hypotheses carry an ancestry
table), and takes its top `2K` in two stages; the output projection is
computed once per search; greedy's argmax is a max + first index; beam
search ranks its extensions from the raw logits (`best_extensions`). (Before
those changes this script patched them into the old library as variants
`dus`, `scatter`, `heads_major` and `split_kv`; their results are in
benchmarks/README.md.) The variants patch the old behaviour back in, to
measure what each part buys:

`decode` (batch 16, source 48, 64 tokens, XLA):

- `baseline`: the library as is.
- `argmax` (greedy): `ops.argmax` (XLA's variadic value/index reduction).
- `table_projection` (greedy and beam): the logits use the transposed
  `(V, d_model)` embedding table at every step instead of the
  `(d_model, V)` kernel carried through the loop.
- `materialized` (beam): the `K x V` extension scores are materialized
  (log-softmax, banned ids, + beam scores) before the two-stage top-k, as
  before `decoding.utils.best_extensions`.
- `full_top_k` (beam): `materialized`, then one `ops.top_k` over all
  `K x V` candidates.
- `reorder` (beam): one self-attention cache row per beam, every buffer
  gathered (`ops.take`) into the new beam order at every step, as before
  the beam caches.
- `gather_writes` (greedy): every cache/token write is
  `layers.utils.dynamic_update`'s gather + select over the whole buffer
  (what non-XLA graphs and exported SavedModels run), instead of XLA's
  in-place dynamic-update-slice.
- `cross_per_beam` (beam): `reorder`, plus the encoder output repeated `K`
  times before the cross-attention keys/values are projected (one cache
  row per beam) instead of one row per sentence shared by its beams.
- `legacy` (greedy and beam): the caches before issue 7: one stacked
  `(B, 2, L, H, d_k)` buffer per layer (attention transposes the whole cache
  at every step), gather + select writes, cross-attention keys/values per
  beam, `reorder`. Covers plain multi-head attention (the benchmark
  configuration). Combine with the others (`legacy+argmax+...`) for the
  whole old library.
- `topk2` (available to `profile_ours.py --variant`, not run by default; was
  0.87x): beam search's top-k over the `K * V` candidates as a per-beam
  top-k, then a top-k of the survivors.

keras-hub's cached greedy search runs in the same interleaved set, so the
issue's decoding ratios are also measured paired.

`train` (XLA, fp32, the fixed batch of compare.py): `baseline`,
`no_dropout` (dropout 0: what dropout's random bits and masks cost),
`philox_dropout` (`keras_transformer.layers.Dropout` draws its masks with
TensorFlow's default Philox under XLA, as `keras.layers.Dropout` does,
instead of ThreeFry) and keras-hub's model, interleaved step by step.

`loss` (not run by default; graph mode and XLA, the fixed batch of
compare.py): our model compiled as `train_translator` compiles it
(`LabelSmoothedCrossEntropy(0.1)` + `MaskedAccuracy`), with the loss as is
(`baseline`: a log-sum-exp, with a written-out gradient outside XLA,
`training.losses.token_cross_entropy`), as before session 9
(`log_softmax_loss`: the per-token losses from `log_softmax`, differentiated
by autodiff) and with Keras's `SparseCategoricalCrossentropy(from_logits=True,
ignore_class=0)` instead (`keras_loss`: no smoothing; what compare.py trains
every Keras system with), interleaved step by step.

`real_rows_loss` (not run by default; graph mode and XLA, the fixed batch of
compare.py, a `tf.GradientTape` step with Adam rather than `fit`): how much
the tied output projection and the loss on padded target positions cost.
`baseline` computes the `(B, T, V)` logits and
`training.losses.token_cross_entropy` (eps 0.1) at every position and masks
the padding; `real_rows` takes the decoder's hidden states, puts the real
target positions first (`layers.utils.real_first_order`, the stable
partition of `apply_to_real_positions`), and projects and scores only the
chunks of 512 rows holding one (a chunk without one is an `ops.cond`
branch not taken), so no `(B, T, V)` logits are formed or reordered. The
same loss value (checked); it needs the labels inside the step, which
`fit`'s model-then-loss split does not give.

`e2e` (graph mode, not run by default): 16 steps per round, from endless
streams, of ours on `keras_transformer.data` buckets (`baseline`), the same
trained with the library's own loss on the same objective (`ours_loss`,
since session 9: `LabelSmoothedCrossEntropy(label_smoothing=0.0)` instead of
Keras's sparse cross-entropy), ours behind the peers' padded `tf.data`
(`ours_padded`) and keras-hub on it (`keras_hub_padded`): the issue's
end-to-end ratio, paired.
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

GREEDY_VARIANTS = ("baseline", "argmax", "table_projection", "gather_writes", "legacy")
BEAM_VARIANTS = (
    "baseline",
    "materialized",
    "full_top_k",
    "table_projection",
    "reorder",
    "cross_per_beam",
    "legacy",
)
TRAIN_VARIANTS = ("baseline", "no_dropout", "philox_dropout")
LOSS_VARIANTS = ("baseline", "log_softmax_loss", "keras_loss")

_MODULES = (
    "keras_transformer.layers.utils",
    "keras_transformer.layers.multi_head_attention",
    "keras_transformer.decoding.greedy_search",
    "keras_transformer.decoding.beam_search",
    "keras_transformer.layers.token_embedding",
    "keras_transformer.layers.dropout",
    "keras_transformer.decoding.utils",
    "keras_transformer.training.losses",
)


def _modules():
    # `keras_transformer.decoding` re-exports functions under the module
    # names, so `import ... as` would bind the functions: use importlib.
    import importlib

    names = (
        "utils",
        "mha",
        "greedy",
        "beam",
        "embedding",
        "dropout",
        "utils_decoding",
        "losses",
    )
    return dict(zip(names, map(importlib.import_module, _MODULES)))


# ---------------------------------------------------------------------------
# Patches (each undone by `patched()`).


def patch_gather_writes():
    """Every `dynamic_update` takes the gather + select (non-XLA) path."""
    _modules()["utils"].in_xla_context = lambda: False


def patch_philox_dropout():
    """Dropout draws its masks with TensorFlow's default (Philox) under XLA
    too, as `keras.layers.Dropout` does."""
    import keras

    _modules()["dropout"].Dropout.call = keras.layers.Dropout.call


def patch_log_softmax_loss():
    """Per-token losses from `log_softmax`, differentiated by autodiff (the
    loss before session 9)."""
    from keras import ops

    losses = _modules()["losses"]

    def token_cross_entropy(y_true, y_pred, label_smoothing=0.0, from_logits=True):
        y_true = ops.cast(y_true, "int32")
        log_probs = losses.token_log_probs(y_pred, from_logits)
        nll = -losses._take_last(log_probs, y_true)
        return (1.0 - label_smoothing) * nll - label_smoothing * ops.mean(
            log_probs, axis=-1
        )

    losses.token_cross_entropy = token_cross_entropy


def _start_state_rows(
    model,
    source_ids,
    max_length,
    batch_size,
    beam_size=1,
    cross_per_beam=False,
    cache_dtype=None,
):
    """`decoding.utils.start_state` with one self-attention cache row per
    beam (no beam cache, no ancestry: beam search then reorders the
    buffers); with `cross_per_beam`, the encoder output (and source mask)
    repeated `beam_size` times, so every beam gets its own cross-attention
    keys/values, as before issue 7."""
    from keras import ops

    source_ids = ops.cast(source_ids, "int32")
    encoder_outputs = model.encode(source_ids, training=False)
    source_mask = ops.not_equal(source_ids, model.pad_id)
    if cross_per_beam and beam_size > 1:
        encoder_outputs = ops.repeat(encoder_outputs, beam_size, axis=0)
        source_mask = ops.repeat(source_mask, beam_size, axis=0)
    rows = batch_size * beam_size
    tokens = ops.concatenate(
        [
            ops.full((rows, 1), model.bos_id, "int32"),
            ops.full((rows, max_length), model.pad_id, "int32"),
        ],
        axis=1,
    )
    cache = model.decoder.init_cache(
        rows, max_length, encoder_outputs, dtype=cache_dtype
    )
    return {
        "tokens": tokens,
        "cache": cache,
        "source_mask": source_mask,
        "output_projection": model.target_embedding.output_projection(),
    }


def patch_reorder(cross_per_beam=False):
    def start_state(*args, **kwargs):
        return _start_state_rows(*args, cross_per_beam=cross_per_beam, **kwargs)

    modules = _modules()
    modules["beam"].start_state = start_state
    modules["greedy"].start_state = start_state


def patch_cross_per_beam():
    patch_reorder(cross_per_beam=True)


def patch_argmax():
    from keras import ops

    _modules()["greedy"].first_argmax = lambda x: ops.cast(
        ops.argmax(x, axis=-1), "int32"
    )


def _materialized_extensions(top_k):
    """A `best_extensions` that materializes the `(B, K * V)` scores, then
    takes `top_k(scores, k)`."""
    from keras import ops

    def best_extensions(logits, log_probs, k, banned_ids=()):
        batch_size, beams, vocabulary = (
            ops.shape(logits)[0],
            logits.shape[1],
            logits.shape[2],
        )
        next_log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        ids = ops.arange(vocabulary, dtype="int32")
        for banned_id in banned_ids:
            next_log_probs = ops.where(ops.equal(ids, banned_id), -1e9, next_log_probs)
        scores = ops.reshape(
            log_probs[:, :, None] + next_log_probs, (batch_size, beams * vocabulary)
        )
        top, index = top_k(scores, k)
        index = ops.cast(index, "int32")
        return top, index // vocabulary, index % vocabulary

    return best_extensions


def patch_materialized():
    _modules()["beam"].best_extensions = _materialized_extensions(
        _modules()["utils_decoding"].top_k
    )


def patch_full_top_k():
    from keras import ops

    _modules()["beam"].best_extensions = _materialized_extensions(ops.top_k)


def patch_table_projection():
    embedding = _modules()["embedding"].TokenEmbedding
    logits = embedding.logits
    embedding.logits = lambda self, hidden_states, kernel=None: logits(
        self, hidden_states
    )


def patch_legacy_layout():
    """The cache layout before issue 7, for plain multi-head attention.

    Per layer one stacked buffer `(B, 2, L, H, d_k)` (kept in a one-entry
    dict `{"kv": ...}` so beam search's per-buffer reorder still applies),
    written by gather + select; attention reads `cache[:, 0]` / `cache[:, 1]`
    sequence-major, so XLA transposes (copies) the whole cache every step.
    Cross-attention keys/values are stacked the same way, one row per beam.
    """
    import math

    from keras import ops

    modules = _modules()
    mha = modules["mha"]
    patch_gather_writes()
    patch_cross_per_beam()
    MHA = mha.MultiHeadAttention
    original_call = MHA.call

    def init_cache(self, batch_size, max_length, beam_size=1, dtype=None):
        if beam_size != 1:
            raise NotImplementedError("legacy caches have one row per beam")
        shape = (batch_size, 2, max_length, self._kv_heads, self.key_dim)
        return {"kv": ops.zeros(shape, self._cache_dtype(dtype))}

    def compute_key_value_cache(self, value, key=None, dtype=None):
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), self._kv_heads, self.key_dim)
        v = self._split_heads(self.value_dense(value), self._kv_heads, self.key_dim)
        return {"kv": ops.cast(ops.stack([k, v], axis=1), self._cache_dtype(dtype))}

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
        cache_ancestry=None,
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
            self.rotary_max_wavelength or self.max_relative_position
        ):
            raise NotImplementedError("legacy covers plain MHA + sinusoidal PE")
        H, dk = self.num_heads, self.key_dim
        if self.is_self_attention:
            qkv = self.query_key_value_dense(query)
            q, k, v = ops.split(qkv, [H * dk, 2 * H * dk], axis=-1)
            q = self._split_heads(q, H, dk)
            update = ops.stack(
                [self._split_heads(k, H, dk), self._split_heads(v, H, dk)], axis=1
            )  # (B, 2, T, H, dk)
            cache = {
                "kv": modules["utils"].dynamic_update(
                    cache["kv"], update, cache_index, axis=2, in_place=False
                )
            }
        else:
            q = self._split_heads(self.query_dense(query), H, dk)
        k, v = cache["kv"][:, 0], cache["kv"][:, 1]  # (B, S, H, dk)
        query_length, key_length = ops.shape(q)[1], ops.shape(k)[1]
        causal_part = None
        if self.is_self_attention:
            offset = ops.cast(cache_index, "int32")
            causal_part = mha.causal_mask(query_length, key_length, offset)
        mask = mha.merge_masks(attention_mask, query_mask, value_mask, causal_part)
        q = q * ops.cast(1.0 / math.sqrt(dk), q.dtype)
        scores = ops.cast(ops.einsum("bthd,bshd->bhts", q, k), "float32")
        if mask is not None:
            scores = ops.where(mask, scores, mha._MASKED_SCORE)
        weights = ops.softmax(scores, axis=-1)
        if mask is not None:
            weights = ops.where(ops.any(mask, axis=-1, keepdims=True), weights, 0.0)
        probs = self.dropout_layer(
            ops.cast(weights, self.compute_dtype), training=training
        )
        context = ops.einsum("bhts,bshd->bthd", probs, v)
        context = ops.reshape(
            context, (ops.shape(context)[0], query_length, H * self._value_dim)
        )
        outputs = (self.output_dense(context),)
        if return_attention_scores:
            outputs += (weights,)
        return outputs + (cache,)

    MHA.init_cache = init_cache
    MHA.compute_key_value_cache = compute_key_value_cache
    MHA.call = call


class _TwoStageTopKOps:
    """`keras.ops` whose `top_k` over `(B, K * V)` beam candidates is two-stage.

    The best `k` of the `K * V` extensions are among each beam's own best `k`
    (a beam's score shifts its whole row), so a top-k per beam row `(B, K, V)`
    then a top-k over the `K * k` survivors selects the same candidates with
    far smaller sorts. Other `top_k` calls pass through.
    """

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary

    def __getattr__(self, name):
        from keras import ops

        return getattr(ops, name)

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
    _modules()["beam"].best_extensions = _materialized_extensions(
        _TwoStageTopKOps(vocabulary).top_k
    )


def apply_patch(variant):
    """Applies a variant's patches globally; `a+b` applies both.

    Also used by `profile_ours.py --variant`.
    """
    for name in variant.split("+"):
        if name in ("baseline", "no_dropout"):
            continue
        if name == "gather_writes":
            patch_gather_writes()
        elif name == "cross_per_beam":
            patch_cross_per_beam()
        elif name == "legacy":
            patch_legacy_layout()
        elif name == "topk2":
            patch_two_stage_topk()
        elif name == "argmax":
            patch_argmax()
        elif name == "full_top_k":
            patch_full_top_k()
        elif name == "materialized":
            patch_materialized()
        elif name == "table_projection":
            patch_table_projection()
        elif name == "reorder":
            patch_reorder()
        elif name == "philox_dropout":
            patch_philox_dropout()
        elif name == "log_softmax_loss":
            patch_log_softmax_loss()
        elif name == "keras_loss":
            continue  # a different loss object, not a patch (`run_loss`)
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
    modules = _modules()
    MHA = modules["mha"].MultiHeadAttention
    saved = {
        "in_xla_context": modules["utils"].in_xla_context,
        "greedy_start": modules["greedy"].start_state,
        "beam_start": modules["beam"].start_state,
        "beam_ops": modules["beam"].ops,
        "beam_best_extensions": modules["beam"].best_extensions,
        "first_argmax": modules["greedy"].first_argmax,
        "logits": modules["embedding"].TokenEmbedding.logits,
        "call": MHA.call,
        "kv_cache": MHA.compute_key_value_cache,
        "init_cache": MHA.init_cache,
        "dropout_call": modules["dropout"].Dropout.call,
        "token_cross_entropy": modules["losses"].token_cross_entropy,
    }
    apply_patch(variant)
    try:
        yield
    finally:
        modules["utils"].in_xla_context = saved["in_xla_context"]
        modules["greedy"].start_state = saved["greedy_start"]
        modules["beam"].start_state = saved["beam_start"]
        modules["beam"].ops = saved["beam_ops"]
        modules["beam"].best_extensions = saved["beam_best_extensions"]
        modules["greedy"].first_argmax = saved["first_argmax"]
        modules["embedding"].TokenEmbedding.logits = saved["logits"]
        MHA.call = saved["call"]
        MHA.compute_key_value_cache = saved["kv_cache"]
        MHA.init_cache = saved["init_cache"]
        modules["dropout"].Dropout.call = saved["dropout_call"]
        modules["losses"].token_cross_entropy = saved["token_cross_entropy"]


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


def run_decode(rounds, only=None):
    """Greedy and beam variants, and keras-hub's cached greedy, interleaved.

    `only`: variant names to run (the baselines always run).
    """
    import _keras_systems as ks
    import numpy as np
    import tensorflow as tf

    source = tf.constant(decode_source())
    new_tokens = DECODE["new_tokens"]
    functions, outputs = {}, {}
    greedy_variants = [v for v in GREEDY_VARIANTS if _selected(v, only)]
    beam_variants = [v for v in BEAM_VARIANTS if _selected(v, only)]
    variants = [("greedy", v) for v in greedy_variants]
    variants += [("beam", v) for v in beam_variants]
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
    floor_model = ks.build_ours()
    for kind, rows in (
        ("greedy", DECODE["batch_size"]),
        ("beam", DECODE["beam_size"] * DECODE["batch_size"]),
    ):
        floor = ks.matmul_floor(floor_model, rows, new_tokens)
        floor()
        functions[f"floor_{kind}"] = floor

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
    ratios = result["ratios"] = {}
    for variant in greedy_variants:
        ratios[f"greedy {variant} vs keras-hub cached (speed-up)"] = _round_ratio(
            times, "keras_hub_cached", f"greedy/{variant}"
        )
    for variant in beam_variants:
        greedy = variant if variant in greedy_variants else "baseline"
        ratios[f"beam {variant} vs greedy {greedy} per sentence (cost ratio)"] = (
            _round_ratio(times, f"beam/{variant}", f"greedy/{greedy}")
        )
    # The matmul floor (`_keras_systems.matmul_floor`): the ratios if a step
    # cost only its weight matmuls.
    ratios["keras-hub cached vs greedy floor (best greedy speed-up)"] = _round_ratio(
        times, "keras_hub_cached", "floor_greedy"
    )
    ratios["beam floor vs greedy floor per sentence (cost ratio)"] = _round_ratio(
        times, "floor_beam", "floor_greedy"
    )
    for kind in ("greedy", "beam"):
        ratios[f"{kind} baseline vs its floor (step / matmuls)"] = _round_ratio(
            times, f"{kind}/baseline", f"floor_{kind}"
        )
    for name in ("keras_hub_cached", "floor_greedy", "floor_beam"):
        result[f"{name}_ms_per_step"] = (
            1000 * statistics.median(times[name]) / new_tokens
        )
    return result


def _round_ratio(times, numerator, denominator):
    """Median over rounds of `times[numerator][i] / times[denominator][i]`."""
    return statistics.median(
        n / d for n, d in zip(times[numerator], times[denominator])
    )


def _selected(variant, only):
    return variant == "baseline" or only is None or variant in only


def run_train(rounds, only=None):
    """Training variants and keras-hub's XLA step, interleaved step by step.

    `only`: variant names to run (the baseline always runs).
    """
    import _keras_systems as ks

    batch = training_batch()
    x, y = ks.keras_inputs(batch)
    functions = {}
    for variant in [v for v in TRAIN_VARIANTS if _selected(v, only)]:
        dropout = 0.0 if variant == "no_dropout" else 0.1
        with patched(variant):  # the first step traces the patched layers
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


def run_loss(rounds, only=None):
    """The trainer's loss, as is and as before, and Keras's, interleaved step
    by step; graph mode and XLA in turn. Returns `{"graph": ..., "xla": ...}`.
    """
    import _keras_systems as ks
    import keras

    from keras_transformer.training import LabelSmoothedCrossEntropy
    from keras_transformer.training import MaskedAccuracy

    batch = training_batch()
    x, y = ks.keras_inputs(batch)
    tokens = count_tokens(batch["target_out"])
    results = {}
    for mode, jit in (("graph", False), ("xla", True)):
        functions, losses = {}, {}
        for variant in [v for v in LOSS_VARIANTS if _selected(v, only)]:
            loss = LabelSmoothedCrossEntropy(0.1)
            if variant == "keras_loss":
                loss = ks.training_loss("keras")  # what compare.py trains with
            with patched(variant):  # the first step traces the patched loss
                model = ks.build_ours()
                model.compile(
                    optimizer=keras.optimizers.Adam(1e-4),
                    loss=loss,
                    metrics=[MaskedAccuracy()],
                    jit_compile=jit,
                )
                losses[variant] = float(model.train_on_batch(x, y)[0])
                for _ in range(2):
                    model.train_on_batch(x, y)
            functions[variant] = lambda model=model: model.train_on_batch(x, y)
        results[mode] = _training_pairs(functions, rounds, tokens, losses)
    return results


def _training_pairs(functions, rounds, tokens, first_losses):
    """Interleaved training steps -> `summarize_pairs` rows with tokens/s
    and each variant's first loss."""
    result = summarize_pairs(interleave(functions, rounds))
    for name, row in result.items():
        row["tokens_per_s"] = tokens / row["median_s"]
        row["first_loss"] = first_losses[name]
    return result


def _real_rows_loss(model, x, y, label_smoothing=0.1, chunk=512):
    """The masked token-mean loss, projecting and scoring real rows only."""
    from keras import ops

    from keras_transformer.layers.utils import real_first_order
    from keras_transformer.training.losses import token_cross_entropy

    source, target = x["source"], x["target"]
    hidden = model.decoder(  # (B, T, d)
        model.target_embedding(target),
        encoder_outputs=model.encode(source, training=True),
        encoder_padding_mask=ops.not_equal(source, model.pad_id),
        padding_mask=ops.not_equal(target, model.pad_id),
        training=True,
    )
    kernel = model.target_embedding.output_projection()  # (d, V)
    rows = ops.reshape(hidden, (-1, hidden.shape[-1]))  # (N, d)
    labels = ops.reshape(y, (-1,))  # (N,)
    order, _, num_real = real_first_order(ops.not_equal(labels, model.pad_id))
    num_rows = rows.shape[0]
    padded = -(-num_rows // chunk) * chunk - num_rows
    rows = ops.pad(ops.take(rows, order, axis=0), [(0, padded), (0, 0)])
    labels = ops.pad(ops.take(labels, order, axis=0), [(0, padded)])

    def chunk_loss(start):
        logits = ops.cast(ops.matmul(rows[start : start + chunk], kernel), "float32")
        piece = labels[start : start + chunk]
        weights = ops.cast(ops.not_equal(piece, model.pad_id), "float32")
        return ops.sum(token_cross_entropy(piece, logits, label_smoothing) * weights)

    total = chunk_loss(0)
    for start in range(chunk, num_rows + padded, chunk):
        total = total + ops.cond(
            start < num_real,
            lambda start=start: chunk_loss(start),
            lambda: ops.zeros((), "float32"),
        )
    return total / ops.cast(num_real, "float32")


def _full_logits_loss(model, x, y, label_smoothing=0.1):
    from keras import ops

    from keras_transformer.training.losses import token_cross_entropy

    logits = model(x, training=True)  # (B, T, V)
    weights = ops.cast(ops.not_equal(y, model.pad_id), "float32")
    losses = token_cross_entropy(y, logits, label_smoothing)
    return ops.sum(losses * weights) / ops.sum(weights)


def run_real_rows_loss(rounds):
    """Full logits vs real rows only, interleaved step by step; graph mode
    and XLA in turn. Returns `{"graph": ..., "xla": ...}`."""
    import _keras_systems as ks
    import keras
    import tensorflow as tf

    batch = training_batch()
    x, y = ks.keras_inputs(batch)
    tokens = count_tokens(batch["target_out"])
    variants = {"baseline": _full_logits_loss, "real_rows": _real_rows_loss}
    results = {}
    for mode, jit in (("graph", False), ("xla", True)):
        functions, losses = {}, {}
        for name, loss_fn in variants.items():
            model = ks.build_ours()
            optimizer = keras.optimizers.Adam(1e-4)
            optimizer.build(model.trainable_variables)

            @tf.function(jit_compile=jit)
            def step(x, y, model=model, optimizer=optimizer, loss_fn=loss_fn):
                with tf.GradientTape() as tape:
                    loss = loss_fn(model, x, y)
                variables = model.trainable_variables
                optimizer.apply(tape.gradient(loss, variables), variables)
                return loss

            losses[name] = float(step(x, y))
            for _ in range(2):
                step(x, y)
            functions[name] = lambda step=step: float(step(x, y))
        results[mode] = _training_pairs(functions, rounds, tokens, losses)
    return results


def run_e2e(rounds, batches=16):
    """End to end, paired: `batches` steps of each system per round, interleaved.

    compare.py runs each system's epochs in its own process, minutes apart,
    and this machine's speed drifts by 20-40% over minutes; here our model
    on `keras_transformer.data` buckets, the same model behind the peers'
    pad-to-batch-max `tf.data` (the stand-in) and keras-hub's model on that
    padded pipeline train in one process (graph mode, as in compare.py),
    `batches` steps each per round from an endless stream (as compare.py's
    default stream mode), after one untimed round each (tracing). A round is
    timed from its first step to its last (`fit`'s teardown excluded) and
    its time is scaled to the same number of real target tokens (each system's
    batches hold different tokens), so `median_s` is seconds per
    `tokens_per_round` real tokens.
    """
    import _keras_systems as ks
    from _common import CONFIG
    from _pipelines import _counting
    from _pipelines import _fit_epochs
    from _pipelines import corpus
    from _pipelines import ours_dataset
    from _pipelines import tf_padded_dataset

    pairs = corpus(batches)
    batch_size, seed, pad = CONFIG["batch_size"], CONFIG["seed"], CONFIG["pad_id"]
    systems = {
        "baseline": (
            ks.build_ours,
            ours_dataset(pairs, batch_size, seed, repeat=True),
        ),
        "ours_loss": (
            ks.build_ours,
            ours_dataset(pairs, batch_size, seed, repeat=True),
        ),
        "ours_padded": (
            ks.build_ours,
            tf_padded_dataset(pairs, batch_size, seed, repeat=True),
        ),
        "keras_hub_padded": (
            ks.build_keras_hub,
            tf_padded_dataset(pairs, batch_size, seed, repeat=True),
        ),
    }
    functions, tokens = {}, {name: [] for name in systems}
    times = {name: [] for name in systems}
    for name, (build, dataset) in systems.items():
        model = build()
        loss = "ours" if name == "ours_loss" else "keras"
        ks.compile_for_training(model, False, loss=loss)
        dataset, counter = _counting(dataset, pad)
        model.fit(dataset, epochs=1, steps_per_epoch=batches, verbose=0)  # traces

        def steps(model=model, dataset=dataset, counter=counter, name=name):
            # Timed from epoch begin to end: without `fit`'s return, where
            # TF 2.21 can block 8-10 s deleting the stream's iterator (its
            # tf.data autotuning thread; see benchmarks/README.md, session 7).
            seconds, _, counted = _fit_epochs(model, dataset, 1, counter, batches)
            times[name].append(seconds[0])
            tokens[name].append(counted[0])

        functions[name] = steps
    interleave(functions, rounds)
    per_round = statistics.median(tokens["baseline"])
    scaled = {
        name: [t * per_round / n for t, n in zip(times[name], tokens[name])]
        for name in times
    }
    result = summarize_pairs(scaled)
    for name, row in result.items():
        row["tokens_per_s"] = per_round / row["median_s"]
        row["tokens"] = tokens[name]
        row["raw_times_s"] = times[name]
    return {"e2e": result, "tokens_per_round": per_round}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--only", default="decode,train")
    parser.add_argument("--output", default=None, help="JSON file")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated decoding/training variants to run (default: "
        "all; the baselines always run)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind = args.child
        only = set(args.variants.split(",")) if args.variants else None
        if kind == "train":
            emit({"train": run_train(args.rounds * 2, only)})
        elif kind == "loss":
            emit(run_loss(args.rounds * 2, only))
        elif kind == "e2e":
            emit(run_e2e(args.rounds))
        elif kind == "real_rows_loss":
            emit(run_real_rows_loss(args.rounds * 2))
        else:
            emit(run_decode(args.rounds, only))
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
        if args.variants:
            command += ["--variants", args.variants]
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
