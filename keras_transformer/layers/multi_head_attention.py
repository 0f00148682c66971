"""Multi-head attention with padding/causal masks and a fixed-size cache."""

import math

import keras
from keras import ops

from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.masking import causal_mask
from keras_transformer.layers.masking import merge_masks
from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import check_rate
from keras_transformer.utils import dynamic_update
from keras_transformer.utils import standardize_cache_dtype

# The two buffers of a key/value cache.
_CACHE_KEYS = ("key", "value")

# Masked scores are replaced (not offset) by this float32 value before softmax.
_MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package="keras_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over several heads (Vaswani et al., 2017).

    `MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_O` with
    `head_i = softmax(Q W_Q_i (K W_K_i)^T / sqrt(d_k)) V W_V_i`.

    The layer has two modes, fixed by its first call:

    - **self-attention** (called without `value`): one fused projection
      produces queries, keys and values from `query` in a single matmul;
    - **attention over another sequence** (called with `value`, e.g. the
      decoder's encoder-decoder attention): separate query, key and value
      projections.

    Masks are boolean (`True` = may attend), combined with AND, and applied in
    float32 by selection (`where`), never by adding `-inf`. A query row whose
    keys are all masked gets all-zero attention weights, so its output is the
    output projection's bias on every code path (with or without dropout,
    with or without returning scores). Scores and softmax are float32 under
    mixed precision.

    Incremental decoding uses a cache of fixed size (XLA friendly, nothing
    grows), a dict of two heads-major buffers:
    `{"key": (batch_size, num_key_value_heads, max_length, key_dim),
    "value": (batch_size, num_key_value_heads, max_length, value_dim)}`
    (`init_cache` makes an empty one). Heads come before positions, so the
    attention matmuls read the buffers as they are stored, with no per-step
    transpose or copy of the whole cache; keys and values are separate
    buffers, so each is written in place. For self-attention, the new
    keys/values are written at `cache_index` and queries attend to positions
    `< cache_index + query_length`. The write is an in-place XLA
    dynamic-update-slice when traced for XLA (`tf.function(jit_compile=True)`,
    e.g. `generate()`), and a gather + select of core TensorFlow ops
    otherwise (eager, plain graphs, exported SavedModels); see
    `keras_transformer.layers.utils.dynamic_update`. Both give the same
    values. The buffers are in the compute dtype unless `init_cache` /
    `compute_key_value_cache` are given another `dtype`; the attention dots
    over a cache run in the cache's dtype (the queries and the attention
    weights are cast to it; scores and softmax stay float32). The
    layer does not autocast its call arguments (`autocast=False` by
    default; its projections cast their inputs to the compute dtype), so a
    float32 cache stays float32 under mixed precision: XLA:CPU computes
    bf16/fp16 dots in float32, and a 16-bit cache would be converted in
    full at every decoding step (see `decoding.generate`'s `cache_dtype`).

    Beam search keeps `R` hypotheses per sentence and reorders them after
    every step. A **beam cache** (`init_cache(groups, max_length,
    beam_size=R)`, buffers `(groups, num_key_value_heads, max_length * R,
    dim)`, position `s` of beam `j` at slot `s * R + j`) never moves;
    instead `cache_ancestry` `(groups, R, max_length)` says, for each query
    row `c * R + r` and position `s`, which beam of its group holds that
    position's key/value (the row's own beam for the positions it writes;
    reorder the ancestry rows, not the buffers, when hypotheses are
    reordered). Each row's queries are scored against all `R` beams' keys in
    one matmul per group and head (reading the cache as stored, `R` times
    the attention arithmetic) and the ancestors' positions are kept, which
    on CPU costs less than copying the whole cache at every step.

    For attention over another sequence, `cache` holds the precomputed
    keys/values of `value` (see `compute_key_value_cache`) and `cache_index`
    is not used. Its batch size may divide the query's: with
    `batch_size = r * cache_batch_size`, query rows `i * r ... i * r + r - 1`
    all attend to cache row `i` (beam search: the `r` beams of one source
    sentence share its encoder keys/values, projected and stored once); a
    `value_mask` may then have either batch size.

    Args:
        num_heads: int, number of attention heads `h`.
        key_dim: int, size of each query/key head `d_k`.
        value_dim: int, size of each value head `d_v`. Defaults to `key_dim`.
        dropout: float, dropout rate on the attention weights.
        use_bias: bool, whether the projections have biases.
        output_dim: int, size of the output. Defaults to the query's last
            dimension.
        num_key_value_heads: int, number of key/value heads. `None` (default)
            means `num_heads` (standard multi-head attention); 1 gives
            multi-query attention and `1 < k < num_heads` grouped-query
            attention (Ainslie et al., 2023). Must divide `num_heads`.
        rotary_max_wavelength: float or `None`. When set, self-attention
            rotates queries and keys by their positions (RoPE, Su et al.,
            2021) with this base (10000 in RoFormer), so scores depend on
            relative positions only. `key_dim` must be even.
        max_relative_position: int or `None`. When set, self-attention adds
            learned relative position representations for the clipped
            distances `-k..k` to keys and values (Shaw et al., 2018).
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(batch_size, query_length, query_dim)`.
        value: optional `(batch_size, key_length, value_dim_in)`. Omit for
            self-attention.
        key: optional `(batch_size, key_length, key_dim_in)`; defaults to
            `value`.
        attention_mask: optional bool `(batch_size, query_length, key_length)`
            or `(batch_size, 1 or num_heads, query_length, key_length)`.
        query_mask: optional bool `(batch_size, query_length)` padding mask.
            Defaults to the query's Keras mask, if any.
        value_mask: optional bool `(batch_size, key_length)` padding mask of
            the keys/values. Defaults to the value's Keras mask, or for
            self-attention without a cache, to `query_mask`.
        causal: bool, apply a causal (look-ahead) mask.
        cache: optional key/value cache, a dict `{"key": (cache_batch_size,
            num_key_value_heads, cache_length, key_dim), "value":
            (cache_batch_size, num_key_value_heads, cache_length,
            value_dim)}`, see above (for self-attention, `cache_batch_size`
            is `batch_size`, or `groups` for a beam cache).
        cache_index: int or scalar int tensor, where to write new keys/values
            in a self-attention cache.
        cache_ancestry: int `(groups, R, max_length)`, required with (and
            only with) a beam cache, see above; `batch_size = groups * R`.
        return_attention_scores: bool, also return the attention weights.
        training: bool, whether dropout is active.

    Returns:
        `output` of shape `(batch_size, query_length, output_dim)`; with
        `return_attention_scores`, also the float32 attention weights of shape
        `(batch_size, num_heads, query_length, key_length)` (`key_length` is
        the cache length with a cache); with a `cache`, also the (updated)
        cache dict, last: `(output[, scores], cache)`.

    Example:

    >>> import numpy as np
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = np.random.rand(3, 5, 8).astype("float32")
    >>> tuple(layer(x, causal=True).shape)
    (3, 5, 8)

    Incremental decoding, one position at a time:

    >>> cache = layer.init_cache(batch_size=3, max_length=5)
    >>> tuple(cache["key"].shape)
    (3, 2, 5, 4)
    >>> out, cache = layer(x[:, :1], cache=cache, cache_index=0, causal=True)
    >>> out, cache = layer(x[:, 1:2], cache=cache, cache_index=1, causal=True)
    >>> tuple(out.shape)
    (3, 1, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 3.2.
        - [Shazeer, 2019](https://arxiv.org/abs/1911.02150) (multi-query).
        - [Ainslie et al., 2023](https://arxiv.org/abs/2305.13245) (GQA).
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864) (RoPE).
        - [Shaw et al., 2018](https://arxiv.org/abs/1803.02155) (relative).
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        num_key_value_heads=None,
        rotary_max_wavelength=None,
        max_relative_position=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        if value_dim is not None:
            check_positive_int("value_dim", value_dim)
        if output_dim is not None:
            check_positive_int("output_dim", output_dim)
        check_rate("dropout", dropout)
        if num_key_value_heads is not None:
            check_positive_int("num_key_value_heads", num_key_value_heads)
            if num_heads % num_key_value_heads:
                raise ValueError(
                    f"num_heads={num_heads} is not divisible by "
                    f"num_key_value_heads={num_key_value_heads}."
                )
        if rotary_max_wavelength is not None:
            if key_dim % 2:
                raise ValueError(
                    f"Rotary embeddings rotate pairs of dimensions: key_dim={key_dim} "
                    "must be even."
                )
            if rotary_max_wavelength <= 1:
                raise ValueError(
                    "`rotary_max_wavelength` must be > 1. "
                    f"Received: rotary_max_wavelength={rotary_max_wavelength}"
                )
        if max_relative_position is not None:
            check_positive_int("max_relative_position", max_relative_position)
        # Call arguments keep their dtype (a float32 cache stays float32);
        # the projections cast their own inputs to the compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.output_dim = output_dim
        self.num_key_value_heads = num_key_value_heads
        self.rotary_max_wavelength = rotary_max_wavelength
        self.max_relative_position = max_relative_position
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True
        self.is_self_attention = None

    @property
    def _value_dim(self):
        return self.value_dim or self.key_dim

    @property
    def _kv_heads(self):
        return self.num_key_value_heads or self.num_heads

    def _dense(self, units, name, input_dim):
        layer = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        layer.build((None, None, input_dim))
        return layer

    def build(self, query_shape, value_shape=None, key_shape=None):
        query_dim = query_shape[-1]
        q_units = self.num_heads * self.key_dim
        k_units = self._kv_heads * self.key_dim
        v_units = self._kv_heads * self._value_dim
        self.is_self_attention = value_shape is None
        if self.is_self_attention:
            self.query_key_value_dense = self._dense(
                q_units + k_units + v_units, "query_key_value", query_dim
            )
        else:
            key_shape = value_shape if key_shape is None else key_shape
            self.query_dense = self._dense(q_units, "query", query_dim)
            self.key_dense = self._dense(k_units, "key", key_shape[-1])
            self.value_dense = self._dense(v_units, "value", value_shape[-1])
        if self.max_relative_position is not None and self.is_self_attention:
            # Shaw et al. (2018): one vector per clipped distance, shared by
            # the heads, for the keys (a^K) and for the values (a^V).
            distances = 2 * self.max_relative_position + 1
            self.relative_key_embeddings = self.add_weight(
                name="relative_key_embeddings",
                shape=(distances, self.key_dim),
                initializer=clone_initializer(self.kernel_initializer),
                autocast=False,  # cast explicitly where read
            )
            self.relative_value_embeddings = self.add_weight(
                name="relative_value_embeddings",
                shape=(distances, self._value_dim),
                initializer=clone_initializer(self.kernel_initializer),
                autocast=False,  # cast explicitly where read
            )
        self.output_dense = self._dense(
            self.output_dim or query_dim,
            "attention_output",
            self.num_heads * self._value_dim,
        )
        self.dropout_layer = Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        if self.rotary_max_wavelength is not None:
            self._rotary_table = SinusoidalPositionalEncoding(
                self.rotary_max_wavelength, dtype=self.dtype_policy, name="rotary"
            )
        self.built = True

    def _split_heads(self, x, num_heads, head_dim):
        # (B, T, heads * head_dim) -> (B, T, heads, head_dim)
        batch_size, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch_size, length, num_heads, head_dim))

    def _cache_dtype(self, dtype):
        return standardize_cache_dtype(self.compute_dtype if dtype is None else dtype)

    def init_cache(self, batch_size, max_length, beam_size=1, dtype=None):
        """An empty (zero) self-attention cache for `max_length` positions.

        Args:
            batch_size: int or scalar int tensor; with `beam_size > 1`, the
                number of beam groups (source sentences).
            max_length: int, the number of positions the cache holds.
            beam_size: int. Above 1, a beam cache for queries of
                `batch_size * beam_size` rows, read through
                `cache_ancestry` (see the class docstring).
            dtype: float dtype of the buffers. Defaults to the layer's
                compute dtype.

        Returns:
            `{"key": (batch_size, num_key_value_heads, max_length, key_dim),
            "value": (batch_size, num_key_value_heads, max_length,
            value_dim)}` of zeros; with `beam_size > 1`,
            `max_length * beam_size` slots instead of `max_length`.
        """
        check_positive_int("beam_size", beam_size)
        dtype = self._cache_dtype(dtype)
        shape = (batch_size, self._kv_heads, max_length * beam_size)
        return {
            "key": ops.zeros(shape + (self.key_dim,), dtype),
            "value": ops.zeros(shape + (self._value_dim,), dtype),
        }

    def compute_key_value_cache(self, value, key=None, dtype=None):
        """Projects `key`/`value` once, for attention over a fixed sequence.

        Args:
            value: `(batch_size, key_length, value_dim_in)`.
            key: optional, defaults to `value`.
            dtype: float dtype of the buffers. Defaults to the layer's
                compute dtype.

        Returns:
            `{"key": (batch_size, num_key_value_heads, key_length, key_dim),
            "value": (batch_size, num_key_value_heads, key_length,
            value_dim)}`, heads-major (transposed once, here).
        """
        dtype = self._cache_dtype(dtype)
        if self.is_self_attention:
            raise ValueError(
                "`compute_key_value_cache` is for attention over another "
                "sequence; this layer was built for self-attention."
            )
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), self._kv_heads, self.key_dim)
        v = self._split_heads(self.value_dense(value), self._kv_heads, self._value_dim)
        return {
            "key": ops.cast(ops.transpose(k, (0, 2, 1, 3)), dtype),
            "value": ops.cast(ops.transpose(v, (0, 2, 1, 3)), dtype),
        }

    @staticmethod
    def _check_cache(cache):
        if not (hasattr(cache, "keys") and set(cache.keys()) == set(_CACHE_KEYS)):
            raise ValueError(
                "`cache` must be a dict {'key': (batch_size, num_key_value_heads, "
                "length, key_dim), 'value': (batch_size, num_key_value_heads, "
                "length, value_dim)}, as made by `init_cache` or "
                "`compute_key_value_cache`. Received: "
                f"{type(cache).__name__} {getattr(cache, 'shape', '')}"
            )
        return {name: cache[name] for name in _CACHE_KEYS}

    def _write_cache(self, cache, k, v, cache_index, beams):
        """Writes the new keys/values `(B, T, Hkv, d)` at `cache_index`.

        Only the `T` new positions are transposed to the cache's layout
        (heads before positions) and written, as one contiguous slice: in
        place under XLA, gather + select otherwise. A beam cache
        (`beams` = R) holds position `s` of beam `j` of group `c` (query row
        `c * R + j`) at `[c, :, s * R + j]`, so the R beams' new positions
        are adjacent too.
        """
        if beams is None:  # (B, Hkv, L, d)
            return {
                name: dynamic_update(
                    cache[name], ops.transpose(new, (0, 2, 1, 3)), cache_index, axis=2
                )
                for name, new in (("key", k), ("value", v))
            }
        groups, length = ops.shape(cache["key"])[0], ops.shape(k)[1]
        updated = {}
        for name, new in (("key", k), ("value", v)):
            new = ops.reshape(new, (groups, beams) + tuple(new.shape[1:]))
            new = ops.transpose(new, (0, 3, 2, 1, 4))  # (C, Hkv, T, R, d)
            new = ops.reshape(new, (groups, self._kv_heads, length * beams, -1))
            updated[name] = dynamic_update(
                cache[name], new, ops.cast(cache_index, "int32") * beams, axis=2
            )
        return updated

    def _check_ancestry(self, cache_ancestry, cache):
        """Validates `cache_ancestry` against the cache; returns `R`."""
        if cache is None or not self.is_self_attention:
            raise ValueError(
                "`cache_ancestry` goes with a self-attention beam cache "
                "(`init_cache(..., beam_size=R)`)."
            )
        shape = tuple(cache_ancestry.shape)
        slots = self._check_cache(cache)["key"].shape[2]
        known = len(shape) == 3 and None not in (shape[2], slots)
        if (
            len(shape) != 3
            or shape[1] is None
            or (known and shape[1] * shape[2] != slots)
        ):
            raise ValueError(
                "`cache_ancestry` must have shape (batch_size, beam_size, "
                f"max_length) with a known beam_size and beam_size * max_length "
                f"= {slots}, the slots of this cache. Received: shape={shape}"
            )
        return shape[1]

    def _ancestry_one_hot(self, cache_ancestry, dtype):
        """`(C, R, L)` beam indices -> one-hot `(C, L, R (source), R (row))`."""
        beams = cache_ancestry.shape[1]
        beam_ids = ops.arange(beams, dtype="int32")[None, None, :, None]
        ancestry = ops.transpose(ops.cast(cache_ancestry, "int32"), (0, 2, 1))
        return ops.cast(ops.equal(ancestry[:, :, None, :], beam_ids), dtype)

    def _beam_dims(self, one_hot):
        """`(groups C, positions L, beams R, query heads per kv head G)`."""
        shape = ops.shape(one_hot)
        return shape[0], shape[1], one_hot.shape[2], self.num_heads // self._kv_heads

    def _ancestry_scores(self, q, k, one_hot):
        """Scores `(B, H, T, L)` of queries `(B, T, H, dk)` over a beam cache.

        Every query row of a group is scored against the keys of all its
        group's beams: one `(L R) x (R T G)` matmul per group and key/value
        head, with the cache `(C, Hkv, L R, dk)` as the left operand, read
        as stored. At each position, the beam the row descends from is kept.
        """
        groups, length, beams, per_kv = self._beam_dims(one_hot)
        query_length = ops.shape(q)[1]
        heads, kv_heads = self.num_heads, self._kv_heads
        q = ops.reshape(q, (groups, beams, query_length, kv_heads, per_kv, -1))
        q = ops.reshape(
            ops.transpose(q, (0, 3, 1, 2, 4, 5)),  # (C, Hkv, R, T, G, dk)
            (groups, kv_heads, beams * query_length * per_kv, -1),
        )
        scores = ops.einsum("ckxd,ckqd->ckxq", k, q)  # (C, Hkv, L R, R T G)
        # Keep each row's beam: multiply by the one-hot (broadcast over at
        # most 4 dimensions, which TensorFlow's kernels need) and sum.
        tg = query_length * per_kv
        scores = ops.reshape(scores, (groups, kv_heads, length * beams * beams, tg))
        one_hot = ops.reshape(one_hot, (groups, 1, length * beams * beams, 1))
        scores = ops.reshape(
            scores * one_hot, (groups, kv_heads, length, beams, beams, tg)
        )
        scores = ops.sum(scores, axis=3)  # (C, Hkv, L, R, T G)
        scores = ops.reshape(
            scores, (groups, kv_heads, length, beams, query_length, per_kv)
        )
        scores = ops.transpose(scores, (0, 3, 1, 5, 4, 2))  # (C, R, Hkv, G, T, L)
        return ops.reshape(scores, (groups * beams, heads, query_length, length))

    def _ancestry_context(self, probs, v, one_hot):
        """Context `(B, T, H, dv)` of weights `(B, H, T, L)` over a beam cache."""
        groups, length, beams, per_kv = self._beam_dims(one_hot)
        query_length = ops.shape(probs)[2]
        heads, kv_heads = self.num_heads, self._kv_heads
        tg = query_length * per_kv
        probs = ops.reshape(
            probs, (groups, beams, kv_heads, per_kv, query_length, length)
        )
        probs = ops.transpose(probs, (0, 1, 5, 2, 4, 3))  # (C, R, L, Hkv, T, G)
        # Spread each weight onto the slot of the beam holding that position.
        row_major = ops.transpose(one_hot, (0, 3, 1, 2))  # (C, row, L, source)
        probs = ops.reshape(
            probs, (groups, beams * length, kv_heads * tg, 1)
        ) * ops.reshape(row_major, (groups, beams * length, 1, beams))
        probs = ops.reshape(probs, (groups, beams, length, kv_heads, tg, beams))
        probs = ops.reshape(
            ops.transpose(probs, (0, 3, 1, 4, 2, 5)),  # (C, Hkv, R, T G, L, source)
            (groups, kv_heads, beams * tg, length * beams),
        )
        context = ops.einsum("ckqx,ckxd->ckqd", probs, v)  # (C, Hkv, R T G, dv)
        context = ops.reshape(
            context, (groups, kv_heads, beams, query_length, per_kv, -1)
        )
        context = ops.transpose(context, (0, 2, 3, 1, 4, 5))  # (C, R, T, Hkv, G, dv)
        return ops.reshape(
            context, (groups * beams, query_length, heads, self._value_dim)
        )

    def _project(self, query, value, key, cache, cache_index, beams=None):
        """Returns q `(B,T,H,dk)`, k, v, the cache, and whether k/v are
        heads-major.

        Without a cache, k `(B,S,Hkv,dk)` and v `(B,S,Hkv,dv)`; with one, the
        cache's buffers k `(B,Hkv,S,dk)` and v `(B,Hkv,S,dv)`.
        """
        H, Hkv, dk, dv = self.num_heads, self._kv_heads, self.key_dim, self._value_dim
        if cache is not None:
            cache = self._check_cache(cache)
        if self.is_self_attention:
            if value is not None or key is not None:
                raise ValueError(
                    "This layer was built for self-attention (first called "
                    "without `value`); call it without `value`/`key`."
                )
            qkv = self.query_key_value_dense(query)  # (B, T, (H + 2 Hkv) dk)
            q, k, v = ops.split(qkv, [H * dk, H * dk + Hkv * dk], axis=-1)
            q = self._split_heads(q, H, dk)
            k = self._split_heads(k, Hkv, dk)
            v = self._split_heads(v, Hkv, dv)
            if self.rotary_max_wavelength is not None:
                offset = 0 if cache_index is None else cache_index
                q = self._rotate(q, offset)
                k = self._rotate(k, offset)
            if cache is None:
                return q, k, v, None, False
            if cache_index is None:
                raise ValueError(
                    "A self-attention `cache` needs `cache_index`, the "
                    "position at which to write the new keys/values."
                )
            cache = self._write_cache(cache, k, v, cache_index, beams)
            return q, cache["key"], cache["value"], cache, True
        if value is None and cache is None:
            raise ValueError(
                "This layer was built for attention over another sequence "
                "(first called with `value`); pass `value` or a `cache`."
            )
        q = self._split_heads(self.query_dense(query), H, dk)
        if cache is not None:
            return q, cache["key"], cache["value"], cache, True
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), Hkv, dk)
        v = self._split_heads(self.value_dense(value), Hkv, dv)
        return q, k, v, None, False

    def _rotate(self, x, offset):
        """Rotary position embedding of `x` `(B, T, heads, d)` (Su et al.).

        Each pair of dimensions `(2i, 2i + 1)` at position `p` is rotated by
        the angle `p * max_wavelength^(-2i / d)`. The sines and cosines come
        from `SinusoidalPositionalEncoding`, which computes exactly these
        angles in float32 (sine on even, cosine on odd dimensions).
        """
        head_dim = x.shape[-1]
        table = self._rotary_table(
            ops.zeros((ops.shape(x)[1], head_dim), "float32"), start_index=offset
        )  # (T, d): sin at 2i, cos at 2i + 1
        sin = table[None, :, None, 0::2]  # (1, T, 1, d / 2)
        cos = table[None, :, None, 1::2]
        x = ops.cast(x, "float32")
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = ops.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
        return ops.cast(ops.reshape(rotated, ops.shape(x)), self.compute_dtype)

    def _relative_positions(self, query_length, key_length, offset):
        """Clipped `key - query` distances `(T, S)` as embedding indices."""
        query_positions = ops.arange(query_length, dtype="int32") + ops.cast(
            offset, "int32"
        )
        distance = (
            ops.arange(key_length, dtype="int32")[None, :] - query_positions[:, None]
        )
        k = self.max_relative_position
        return ops.clip(distance, -k, k) + k

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
        if query_mask is None:
            query_mask = getattr(query, "_keras_mask", None)
        if value_mask is None and value is not None:
            value_mask = getattr(value, "_keras_mask", None)
        if value_mask is None and self.is_self_attention and cache is None:
            value_mask = query_mask

        beams = None
        if cache_ancestry is not None:
            beams = self._check_ancestry(cache_ancestry, cache)
        q, k, v, cache, heads_major = self._project(
            query, value, key, cache, cache_index, beams
        )
        if heads_major:  # attention over a cache runs in the cache's dtype
            q = ops.cast(q, k.dtype)
        query_length = ops.shape(q)[1]
        key_length = ops.shape(k)[2 if heads_major else 1]
        beam_cache = cache_ancestry is not None
        if beam_cache:  # key_length counts positions, not slots
            one_hot = self._ancestry_one_hot(cache_ancestry, q.dtype)
            key_length = ops.shape(one_hot)[1]

        # A cross-attention cache shared by `repeats` consecutive query rows
        # (beam search): fold those rows into the query length,
        # (repeats * C, T, ...) -> (C, repeats * T, ...), and unfold the
        # outputs at the end. A no-op reshape when the batch sizes are equal.
        folded = cache is not None and not self.is_self_attention
        if folded:
            query_batch, cache_batch = ops.shape(q)[0], ops.shape(k)[0]
            repeats = query_batch // cache_batch
            unfolded_length = query_length
            query_length = repeats * query_length
            q = ops.reshape(
                q, (cache_batch, query_length, self.num_heads, self.key_dim)
            )
            if query_mask is not None:
                query_mask = ops.reshape(query_mask, (cache_batch, query_length))
            if value_mask is not None:  # (C or repeats * C, S): first of each
                value_mask = ops.reshape(value_mask, (cache_batch, -1, key_length))
                value_mask = value_mask[:, 0]
            if attention_mask is not None:
                attention_mask = self._fold_attention_mask(
                    attention_mask, cache_batch, repeats, unfolded_length, key_length
                )

        causal_part = None
        if self.is_self_attention and cache is not None:
            # Keys past the last written position are empty cache slots.
            offset = ops.cast(cache_index, "int32")
            if causal:
                causal_part = causal_mask(query_length, key_length, offset)
            else:
                filled = ops.arange(key_length, dtype="int32") < (offset + query_length)
                causal_part = filled[None, None, None, :]
        elif causal:
            causal_part = causal_mask(query_length, key_length)
        mask = merge_masks(attention_mask, query_mask, value_mask, causal_part)
        relative = None
        if self.max_relative_position is not None and self.is_self_attention:
            relative = self._relative_positions(
                query_length, key_length, 0 if cache_index is None else cache_index
            )  # (T, S)

        # Keys/values are (B, S, Hkv, d) or, from a cache, (B, Hkv, S, d)
        # (a beam cache: (C, Hkv, R, S, d), see `_ancestry_scores`).
        kv = "bhsd" if heads_major else "bshd"
        kv_grouped = "bksd" if heads_major else "bskd"
        # Scores in float32: (B, H, T, S).
        q = q * ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype)
        q_heads = q  # (B, T, H, dk)
        groups = self.num_heads // self._kv_heads
        batch_size = ops.shape(q)[0]
        if beam_cache:
            scores = self._ancestry_scores(q, k, one_hot)
        elif groups == 1:
            scores = ops.einsum(f"bthd,{kv}->bhts", q, k)
        else:
            q = ops.reshape(
                q, (batch_size, query_length, self._kv_heads, groups, self.key_dim)
            )
            scores = ops.einsum(f"btkgd,{kv_grouped}->bkgts", q, k)
            scores = ops.reshape(
                scores, (batch_size, self.num_heads, query_length, key_length)
            )
        if relative is not None:  # q_i . a^K_ij (Shaw et al., eq. 4)
            relative_keys = ops.take(
                ops.cast(self.relative_key_embeddings, q.dtype), relative, axis=0
            )  # (T, S, dk)
            scores = scores + ops.einsum("bthd,tsd->bhts", q_heads, relative_keys)
        scores = ops.cast(scores, "float32")
        if mask is not None:
            scores = ops.where(mask, scores, _MASKED_SCORE)
        weights = ops.softmax(scores, axis=-1)
        if mask is not None:
            # A fully masked row attends to nothing (not to a uniform average).
            weights = ops.where(ops.any(mask, axis=-1, keepdims=True), weights, 0.0)

        probs = self.dropout_layer(
            ops.cast(weights, self.compute_dtype), training=training
        )
        if heads_major:
            probs = ops.cast(probs, v.dtype)
        if beam_cache:
            context = self._ancestry_context(probs, v, one_hot)
        elif groups == 1:
            context = ops.einsum(f"bhts,{kv}->bthd", probs, v)
        else:
            probs_g = ops.reshape(
                probs, (batch_size, self._kv_heads, groups, query_length, key_length)
            )
            context = ops.einsum(f"bkgts,{kv_grouped}->btkgd", probs_g, v)
        if relative is not None:  # sum_j alpha_ij a^V_ij (Shaw et al., eq. 3)
            relative_values = ops.take(
                ops.cast(self.relative_value_embeddings, probs.dtype), relative, axis=0
            )  # (T, S, dv)
            context = ops.reshape(
                context, (batch_size, query_length, self.num_heads, self._value_dim)
            ) + ops.einsum("bhts,tsd->bthd", probs, relative_values)
        # Concatenate heads: (B, T, H * dv), then W_O.
        context = ops.reshape(
            context, (batch_size, query_length, self.num_heads * self._value_dim)
        )
        output = self.output_dense(context)
        if folded:  # back to (repeats * C, T, ...)
            output = ops.reshape(
                output, (query_batch, unfolded_length, output.shape[-1])
            )
            if return_attention_scores:
                weights = ops.reshape(
                    weights,
                    (cache_batch, self.num_heads, repeats, unfolded_length, -1),
                )
                weights = ops.reshape(
                    ops.transpose(weights, (0, 2, 1, 3, 4)),
                    (query_batch, self.num_heads, unfolded_length, key_length),
                )

        outputs = (output,)
        if return_attention_scores:
            outputs += (weights,)
        if cache is not None:
            outputs += (cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _fold_attention_mask(self, mask, cache_batch, repeats, length, key_length):
        """`(r C, T, S)` or `(r C, h, T, S)` -> `(C, [h,] r T, S)`."""
        if len(mask.shape) == 3:
            return ops.reshape(mask, (cache_batch, repeats * length, key_length))
        heads = ops.shape(mask)[1]
        mask = ops.reshape(mask, (cache_batch, repeats, heads, length, key_length))
        return ops.reshape(
            ops.transpose(mask, (0, 2, 1, 3, 4)),
            (cache_batch, heads, repeats * length, key_length),
        )

    def compute_output_spec(
        self,
        query,
        value=None,
        key=None,
        cache=None,
        return_attention_scores=False,
        **kwargs,
    ):
        output_dim = self.output_dim or query.shape[-1]
        batch_size, query_length = query.shape[0], query.shape[1]
        output = keras.KerasTensor(
            (batch_size, query_length, output_dim), dtype=self.compute_dtype
        )
        outputs = (output,)
        if return_attention_scores:
            if cache is not None:
                key_length = cache["key"].shape[-2]
            elif value is not None:
                key_length = value.shape[1]
            else:
                key_length = query_length
            outputs += (
                keras.KerasTensor(
                    (batch_size, self.num_heads, query_length, key_length),
                    dtype="float32",
                ),
            )
        if cache is not None:
            outputs += (
                {
                    name: keras.KerasTensor(cache[name].shape, dtype=cache[name].dtype)
                    for name in _CACHE_KEYS
                },
            )
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "max_relative_position": self.max_relative_position,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
