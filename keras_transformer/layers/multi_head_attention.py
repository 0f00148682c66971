"""Multi-head attention with padding/causal masks and a fixed-size cache."""

import math

import keras
from keras import ops

from keras_transformer.layers.attention_cache import CACHE_KEYS
from keras_transformer.layers.attention_cache import check_cache
from keras_transformer.layers.attention_cache import empty_buffer
from keras_transformer.layers.attention_cache import fold_shared_rows
from keras_transformer.layers.attention_cache import unfold_shared_rows
from keras_transformer.layers.attention_cache import write_cache
from keras_transformer.layers.attention_cache import written_part
from keras_transformer.layers.beam_ancestry import ancestry_context
from keras_transformer.layers.beam_ancestry import ancestry_one_hot
from keras_transformer.layers.beam_ancestry import ancestry_scores
from keras_transformer.layers.beam_ancestry import check_ancestry
from keras_transformer.layers.beam_ancestry import own_history
from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.masking import causal_mask
from keras_transformer.layers.masking import merge_masks
from keras_transformer.layers.relative_positions import relative_context
from keras_transformer.layers.relative_positions import relative_position_indices
from keras_transformer.layers.relative_positions import relative_scores
from keras_transformer.layers.rotary_embedding import apply_rotary_embedding
from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import check_rate
from keras_transformer.utils import in_xla_context
from keras_transformer.utils import standardize_cache_dtype

# Masked scores are replaced (not offset) by this float32 value before softmax.
_MASKED_SCORE = -1e9

# Einsum subscripts of keys/values, `(plain, grouped)` by `heads_major`:
# `(B, S, heads, d)` as projected, `(B, heads, S, d)` as stored in a cache.
_KEY_LAYOUTS = {False: ("bshd", "bskd"), True: ("bhsd", "bksd")}


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
    attention matmuls read the buffers as they are stored, and keys and
    values are separate buffers, each written in place. For self-attention,
    the new keys/values are written at `cache_index` (see
    `attention_cache.write_cache`) and queries attend to positions
    `< cache_index + query_length`. The buffers are in the compute dtype
    unless `init_cache` / `compute_key_value_cache` are given another
    `dtype`; the attention dots over a cache run in the cache's dtype (the
    queries and the attention weights are cast to it; scores and softmax
    stay float32). The layer does not autocast its call arguments
    (`autocast=False` by default; its projections cast their inputs to the
    compute dtype), so a float32 cache stays float32 under mixed precision
    (see `decoding.generate`'s `cache_dtype` for when that is chosen).

    Beam search keeps `R` hypotheses per sentence and reorders them after
    every step. A **beam cache** (`init_cache(groups, max_length,
    beam_size=R)`, buffers `(groups, num_key_value_heads, max_length * R,
    dim)`, position `s` of beam `j` at slot `s * R + j`) never moves;
    instead `cache_ancestry` `(groups, R, max_length)` says, for each query
    row `c * R + r` and position `s`, which beam of its group holds that
    position's key/value (the row's own beam for the positions it writes;
    reorder the ancestry rows, not the buffers, when hypotheses are
    reordered). See `keras_transformer.layers.beam_ancestry` for how such a
    cache is read. Outside XLA (whose shapes must not change from step to
    step), a self-attention cache is read only up to its last written
    position, and a beam cache as each row's own history
    (`beam_ancestry.own_history`); the weights returned are then zero past
    that position.

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
            "key": empty_buffer(shape + (self.key_dim,), dtype),
            "value": empty_buffer(shape + (self._value_dim,), dtype),
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
        query_mask, value_mask = self._default_masks(
            query, value, query_mask, value_mask, cache
        )
        cache = None if cache is None else check_cache(cache)
        beam_size = self._check_ancestry(cache_ancestry, cache)

        # Project: q (B, T, H, dk); k (B, S, Hkv, dk), v (B, S, Hkv, dv), or
        # None over a cross-attention cache.
        q, k, v = self._project(query, value, key, cache)
        # Rotary positions (self-attention): rotate q and k by position.
        q, k = self._rotate_queries_and_keys(q, k, cache_index)
        # Cache: write the new keys/values; read its buffers (B, Hkv, S, d)
        # in their own dtype.
        heads_major = cache is not None
        unwritten = None  # positions of a self-attention cache cut off
        if heads_major:
            k, v, cache = self._update_cache(k, v, cache, cache_index, beam_size)
            k, v, cache_ancestry, unwritten = self._written_keys(
                k, v, cache_ancestry, cache_index, ops.shape(q)[1]
            )
            q = ops.cast(q, k.dtype)
        ancestry = None  # a beam cache: (C, L, R, R), see `beam_ancestry`
        if cache_ancestry is not None:
            ancestry = ancestry_one_hot(cache_ancestry, q.dtype)
        # Beams sharing a cross-attention cache row: (r C, T) -> (C, r T).
        shared = heads_major and not self.is_self_attention
        if shared:
            query_batch, unfolded_length = ops.shape(q)[0], ops.shape(q)[1]
            q, query_mask, value_mask, attention_mask = fold_shared_rows(
                ops.shape(k)[0], q, query_mask, value_mask, attention_mask
            )

        # Mask (bool, broadcastable to (B, H, T, S)) and relative positions.
        query_length = ops.shape(q)[1]
        key_length = self._key_length(k, ancestry, heads_major)
        write_index = cache_index if heads_major and self.is_self_attention else None
        mask = self._compute_attention_mask(
            (query_length, key_length),
            (attention_mask, query_mask, value_mask),
            causal,
            write_index,
        )
        relative = self._relative_indices(query_length, key_length, cache_index)

        # Attention: context (B, T, H * dv), float32 weights (B, H, T, S).
        context, weights = self._compute_attention(
            q, k, v, mask, relative, ancestry, heads_major, training=training
        )
        output = self.output_dense(context)  # (B, T, output_dim)
        if shared:  # back to (r C, T, ...)
            output, weights = unfold_shared_rows(
                query_batch,
                unfolded_length,
                output,
                weights if return_attention_scores else None,
            )

        outputs = (output,)
        if return_attention_scores:
            if unwritten is not None:  # (B, H, T, S): zeros where cut off
                weights = ops.pad(weights, ((0, 0), (0, 0), (0, 0), (0, unwritten)))
            outputs += (weights,)
        if cache is not None:
            outputs += (cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _default_masks(self, query, value, query_mask, value_mask, cache):
        """The padding masks, defaulting to the Keras masks of the inputs."""
        if query_mask is None:
            query_mask = getattr(query, "_keras_mask", None)
        if value_mask is None and value is not None:
            value_mask = getattr(value, "_keras_mask", None)
        if value_mask is None and self.is_self_attention and cache is None:
            value_mask = query_mask
        return query_mask, value_mask

    def _check_ancestry(self, cache_ancestry, cache):
        """Validates `cache_ancestry` against the cache; returns `R` or `None`."""
        if cache_ancestry is None:
            return None
        if cache is None or not self.is_self_attention:
            raise ValueError(
                "`cache_ancestry` goes with a self-attention beam cache "
                "(`init_cache(..., beam_size=R)`)."
            )
        return check_ancestry(cache_ancestry, cache["key"].shape[2])

    def _project(self, query, value, key, cache):
        """q `(B, T, H, dk)`, k `(B, S, Hkv, dk)` and v `(B, S, Hkv, dv)`.

        Over a cross-attention cache, only the queries are projected (k and
        v are `None`).
        """
        H, Hkv, dk, dv = self.num_heads, self._kv_heads, self.key_dim, self._value_dim
        if self.is_self_attention:
            if value is not None or key is not None:
                raise ValueError(
                    "This layer was built for self-attention (first called "
                    "without `value`); call it without `value`/`key`."
                )
            qkv = self.query_key_value_dense(query)  # (B, T, (H + 2 Hkv) dk)
            q, k, v = ops.split(qkv, [H * dk, H * dk + Hkv * dk], axis=-1)
            return (
                self._split_heads(q, H, dk),
                self._split_heads(k, Hkv, dk),
                self._split_heads(v, Hkv, dv),
            )
        if value is None and cache is None:
            raise ValueError(
                "This layer was built for attention over another sequence "
                "(first called with `value`); pass `value` or a `cache`."
            )
        q = self._split_heads(self.query_dense(query), H, dk)
        if cache is not None:
            return q, None, None
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), Hkv, dk)
        v = self._split_heads(self.value_dense(value), Hkv, dv)
        return q, k, v

    def _rotate_queries_and_keys(self, q, k, cache_index):
        """Rotary embeddings of self-attention queries and keys, if enabled."""
        if self.rotary_max_wavelength is None or not self.is_self_attention:
            return q, k
        offset = 0 if cache_index is None else cache_index
        return self._rotate(q, offset), self._rotate(k, offset)

    def _rotate(self, x, offset):
        """Rotary position embedding of `x` `(B, T, heads, d)` (Su et al.).

        The pair of dimensions `(2i, 2i + 1)` at position `p` (counted from
        `offset`) is rotated by the angle `p * max_wavelength^(-2i / d)`; see
        `rotary_embedding.apply_rotary_embedding`. The sines and cosines
        come from `SinusoidalPositionalEncoding`, in float32.
        """
        sinusoids = self._rotary_table(
            ops.zeros((ops.shape(x)[1], x.shape[-1]), "float32"), start_index=offset
        )  # (T, d): sin at 2i, cos at 2i + 1
        return ops.cast(apply_rotary_embedding(x, sinusoids), self.compute_dtype)

    def _update_cache(self, k, v, cache, cache_index, beam_size):
        """Writes new self-attention keys/values; returns k, v and the cache.

        A cross-attention cache holds the keys/values already: it is read
        as it is.
        """
        if not self.is_self_attention:
            return cache["key"], cache["value"], cache
        if cache_index is None:
            raise ValueError(
                "A self-attention `cache` needs `cache_index`, the "
                "position at which to write the new keys/values."
            )
        cache = write_cache(cache, k, v, cache_index, beam_size=beam_size)
        return cache["key"], cache["value"], cache

    def _written_keys(self, k, v, cache_ancestry, cache_index, query_length):
        """Outside XLA, a self-attention cache's written positions only.

        Returns `(k, v, cache_ancestry, unwritten)`: the buffers cut to the
        written positions (`attention_cache.written_part`), a beam cache
        read as each row's own history (`beam_ancestry.own_history`, the
        ancestry then `None`), and the int32 number of positions cut off.
        Unchanged and `None` for a cross-attention cache or under XLA,
        whose shapes must not change from step to step.
        """
        if not self.is_self_attention or in_xla_context():
            return k, v, cache_ancestry, None
        written = ops.cast(cache_index, "int32") + query_length
        if cache_ancestry is None:
            unwritten = ops.shape(k)[2] - written
            k, v = written_part(k, v, written)
        else:
            unwritten = ops.shape(cache_ancestry)[2] - written
            k, v = own_history(k, v, cache_ancestry, written)
        return k, v, None, unwritten

    def _key_length(self, k, ancestry, heads_major):
        """The number of key positions (of a beam cache: positions, not slots)."""
        if ancestry is not None:
            return ops.shape(ancestry)[1]
        return ops.shape(k)[2 if heads_major else 1]

    def _compute_attention_mask(self, lengths, masks, causal, write_index):
        """AND of the given masks, the causal mask and the filled cache slots.

        `lengths` is `(T, S)`; `masks` is `(attention_mask, query_mask,
        value_mask)`, each optional. `write_index` is where a self-attention
        cache was written (else `None`): keys past the last written position
        are empty slots.
        """
        query_length, key_length = lengths
        causal_part = None
        if write_index is not None:
            offset = ops.cast(write_index, "int32")
            if causal:
                causal_part = causal_mask(query_length, key_length, offset)
            else:
                filled = ops.arange(key_length, dtype="int32") < (offset + query_length)
                causal_part = filled[None, None, None, :]
        elif causal:
            causal_part = causal_mask(query_length, key_length)
        return merge_masks(*masks, causal_part)

    def _relative_indices(self, query_length, key_length, cache_index):
        """Relative position indices `(T, S)` of self-attention, or `None`."""
        if self.max_relative_position is None or not self.is_self_attention:
            return None
        return relative_position_indices(
            query_length,
            key_length,
            self.max_relative_position,
            0 if cache_index is None else cache_index,
        )

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        relative_indices=None,
        ancestry=None,
        heads_major=False,
        training=None,
    ):
        """Scaled dot-product attention of the projected heads.

        Args:
            query: `(B, T, H, dk)`.
            key: `(B, S, Hkv, dk)`, or heads-major `(B, Hkv, S, dk)` (a
                cache's buffer; with `ancestry`, a beam cache's).
            value: `(B, S, Hkv, dv)`, or heads-major like `key`.
            attention_mask: optional bool, broadcastable to `(B, H, T, S)`.
            relative_indices: optional int `(T, S)` (Shaw et al.).
            ancestry: optional one-hot `(C, S, R, R)` of a beam cache.
            heads_major: bool, whether `key`/`value` are heads-major.
            training: bool, whether dropout is active.

        Returns:
            `(context, weights)`: `(B, T, H * dv)` in the compute dtype (or
            the cache's) and float32 `(B, H, T, S)`.
        """
        query = query * ops.cast(1.0 / math.sqrt(self.key_dim), query.dtype)
        scores = self._attention_scores(query, key, ancestry, heads_major)
        if relative_indices is not None:  # q_i . a^K_ij (Shaw et al., eq. 4)
            scores = scores + relative_scores(
                query, self.relative_key_embeddings, relative_indices
            )
        weights = self._masked_softmax(scores, attention_mask)  # float32
        probs = self.dropout_layer(
            ops.cast(weights, self.compute_dtype), training=training
        )
        if heads_major:
            probs = ops.cast(probs, value.dtype)
        context = self._attention_context(probs, value, ancestry, heads_major)
        if relative_indices is not None:  # sum_j alpha_ij a^V_ij (eq. 3)
            context = context + relative_context(
                probs, self.relative_value_embeddings, relative_indices
            )
        # Concatenate heads: (B, T, H, dv) -> (B, T, H * dv).
        batch_size, query_length = ops.shape(query)[0], ops.shape(query)[1]
        context = ops.reshape(
            context, (batch_size, query_length, self.num_heads * self._value_dim)
        )
        return context, weights

    def _attention_scores(self, query, key, ancestry, heads_major):
        """`(B, H, T, S)` dot products of queries and keys."""
        if ancestry is not None:
            return ancestry_scores(query, key, ancestry)
        layout, grouped_layout = _KEY_LAYOUTS[heads_major]
        groups = self.num_heads // self._kv_heads
        if groups == 1:
            return ops.einsum(f"bthd,{layout}->bhts", query, key)
        batch_size, query_length = ops.shape(query)[0], ops.shape(query)[1]
        query = ops.reshape(
            query, (batch_size, query_length, self._kv_heads, groups, self.key_dim)
        )
        scores = ops.einsum(f"btkgd,{grouped_layout}->bkgts", query, key)
        key_length = ops.shape(scores)[-1]
        return ops.reshape(
            scores, (batch_size, self.num_heads, query_length, key_length)
        )

    def _masked_softmax(self, scores, mask):
        """float32 softmax over keys; masked keys get weight 0.

        Masked scores are replaced (by selection, never by adding `-inf`)
        before the softmax, and a row whose keys are all masked gets
        all-zero weights instead of a uniform average.
        """
        scores = ops.cast(scores, "float32")
        if mask is None:
            return ops.softmax(scores, axis=-1)
        weights = ops.softmax(ops.where(mask, scores, _MASKED_SCORE), axis=-1)
        return ops.where(ops.any(mask, axis=-1, keepdims=True), weights, 0.0)

    def _attention_context(self, probs, value, ancestry, heads_major):
        """`(B, T, H, dv)`: the values averaged with weights `(B, H, T, S)`."""
        if ancestry is not None:
            return ancestry_context(probs, value, ancestry)
        layout, grouped_layout = _KEY_LAYOUTS[heads_major]
        groups = self.num_heads // self._kv_heads
        if groups == 1:
            return ops.einsum(f"bhts,{layout}->bthd", probs, value)
        batch_size, _, query_length, key_length = ops.shape(probs)
        probs = ops.reshape(
            probs, (batch_size, self._kv_heads, groups, query_length, key_length)
        )
        context = ops.einsum(f"bkgts,{grouped_layout}->btkgd", probs, value)
        return ops.reshape(
            context, (batch_size, query_length, self.num_heads, self._value_dim)
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
                    for name in CACHE_KEYS
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
