"""The encoder-decoder Transformer model."""

import copy

import keras
from keras import ops

from keras_transformer.decoding.generation import generate
from keras_transformer.layers.decoder import Decoder
from keras_transformer.layers.encoder import Encoder
from keras_transformer.layers.token_embedding import TokenEmbedding
from keras_transformer.models.replica_build import symbolic_build_from_one_replica
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.utils import check_heads
from keras_transformer.utils import check_positive_int

PRESETS = {
    # Table 3 of the paper, "base" and "big".
    "base": {
        "num_layers": 6,
        "d_model": 512,
        "num_heads": 8,
        "d_ff": 2048,
        "dropout": 0.1,
    },
    "big": {
        "num_layers": 6,
        "d_model": 1024,
        "num_heads": 16,
        "d_ff": 4096,
        "dropout": 0.3,
    },
    # Small enough to train on one CPU in minutes (the embedded demo).
    "tiny": {
        "num_layers": 2,
        "d_model": 128,
        "num_heads": 4,
        "d_ff": 512,
        "dropout": 0.1,
    },
}


# The constructor arguments that the encoder and decoder stacks also take
# (besides `activation`, passed as given, and the dtype policy).
_STACK_ARGUMENTS = (
    "num_heads",
    "d_ff",
    "d_model",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "normalize_first",
    "layer_norm_epsilon",
    "num_key_value_heads",
    "position_encoding",
    "max_wavelength",
    "max_relative_position",
    "max_positions",
    "pad_id",
)


def _check_config(
    vocabulary_size,
    target_vocabulary_size,
    d_model,
    num_heads,
    share_embeddings,
    special_ids,
):
    """Validates `Transformer`'s sizes and ids; resolves `share_embeddings`.

    Args:
        vocabulary_size: the constructor's argument, as given.
        target_vocabulary_size: idem.
        d_model: idem.
        num_heads: idem.
        share_embeddings: idem; `None` for the default.
        special_ids: dict, `{"pad_id": ..., "bos_id": ..., "eos_id": ...}`.

    Returns:
        bool, `share_embeddings` (by default, whether the source and target
        vocabularies are one).

    Raises:
        ValueError: on a non-positive size, a `d_model` that `num_heads`
            does not divide, shared embeddings over two vocabularies, or a
            special id outside a vocabulary.
    """
    check_positive_int("vocabulary_size", vocabulary_size)
    if target_vocabulary_size is not None:
        check_positive_int("target_vocabulary_size", target_vocabulary_size)
    check_positive_int("d_model", d_model)
    check_positive_int("num_heads", num_heads)
    check_heads(d_model, num_heads)
    share_embeddings = _resolve_share_embeddings(
        vocabulary_size, target_vocabulary_size, share_embeddings
    )
    smallest = min(vocabulary_size, target_vocabulary_size or vocabulary_size)
    for name, value in special_ids.items():
        if not 0 <= value < smallest:
            raise ValueError(
                f"`{name}` must be a valid token id. Received: {name}={value}"
            )
    return share_embeddings


def _resolve_share_embeddings(vocabulary_size, target_vocabulary_size, share):
    """`share` (`None`: whether the vocabularies are one); a `ValueError` if
    embeddings are to be shared between two vocabularies."""
    separate = (
        target_vocabulary_size is not None and target_vocabulary_size != vocabulary_size
    )
    if share is None:
        return not separate
    if share and separate:
        raise ValueError(
            "share_embeddings=True needs one vocabulary, but "
            f"vocabulary_size={vocabulary_size} != "
            f"target_vocabulary_size={target_vocabulary_size}."
        )
    return share


@keras.saving.register_keras_serializable(package="keras_transformer")
class Transformer(keras.Model):
    """The Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

    `logits = Transformer(...)({"source": source_ids, "target": target_in})`
    where `target_in` is the target shifted right (BOS first). Logits are
    float32 `(batch_size, target_length, target_vocabulary_size)` under any
    dtype policy. Id 0 is padding in both languages.

    Source and target share one vocabulary and one embedding matrix by
    default, and the decoder's embedding is also the pre-softmax projection
    (paper section 3.4). With `target_vocabulary_size` the languages have
    separate vocabularies (and embeddings).

    `encode()` and `decode()` expose the two halves; `init_cache()` and
    `decode(..., cache=, cache_index=)` run the decoder one position at a
    time with fixed-size key/value caches.

    Args:
        vocabulary_size: int, size of the (source, or shared) vocabulary.
        target_vocabulary_size: optional int, size of a separate target
            vocabulary. Defaults to `vocabulary_size`, shared.
        num_layers: int, encoder blocks `N`.
        num_decoder_layers: int, decoder blocks; defaults to `num_layers`.
        d_model: int, model size.
        num_heads: int, attention heads `h`.
        d_ff: int, feed-forward inner size.
        dropout: float, residual and embedding dropout `P_drop`.
        attention_dropout: float, dropout on attention weights.
        activation_dropout: float, dropout inside the feed-forward networks.
        activation: feed-forward activation.
        normalize_first: bool, pre-LN blocks (and final LayerNorms).
        layer_norm_epsilon: float.
        num_key_value_heads: int, see `MultiHeadAttention` (1 = multi-query,
            between 1 and `num_heads` = grouped-query attention).
        position_encoding: `"sinusoidal"` (default), `"learned"`,
            `"rotary"` or `"relative"`; see `Encoder`.
        max_wavelength: float, base of the sinusoidal/rotary encodings.
        max_relative_position: int, clipping distance of `"relative"`.
        max_positions: int, table size of `"learned"` positions.
        share_embeddings: bool, one embedding matrix for source and target.
            Defaults to `True` when the vocabulary is shared.
        tie_output_embeddings: bool, the target embedding is also the output
            projection. Defaults to `True`.
        pad_id: int. bos_id: int. eos_id: int. Special ids (see
            `keras_transformer.special_tokens`).
        **kwargs: base model keyword arguments (`name`, `dtype`).

    Call arguments:
        inputs: dict with `"source"` int `(batch_size, source_length)` and
            `"target"` int `(batch_size, target_length)`, or a tuple
            `(source, target)`.
        training: bool.

    Returns:
        float32 logits `(batch_size, target_length, target_vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> model = Transformer.from_preset("tiny", vocabulary_size=100)
    >>> source = np.array([[5, 6, 7, 3, 0]])
    >>> target = np.array([[2, 8, 9]])
    >>> tuple(model({"source": source, "target": target}).shape)
    (1, 3, 100)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [The Illustrated Transformer](https://jalammar.github.io/illustrated-transformer/)
    """

    def __init__(
        self,
        vocabulary_size,
        target_vocabulary_size=None,
        num_layers=6,
        num_decoder_layers=None,
        d_model=512,
        num_heads=8,
        d_ff=2048,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation="relu",
        normalize_first=False,
        layer_norm_epsilon=1e-6,
        num_key_value_heads=None,
        position_encoding="sinusoidal",
        max_wavelength=10000,
        max_relative_position=16,
        max_positions=1024,
        share_embeddings=None,
        tie_output_embeddings=True,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        **kwargs,
    ):
        share_embeddings = _check_config(
            vocabulary_size,
            target_vocabulary_size,
            d_model,
            num_heads,
            share_embeddings,
            special_ids={"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id},
        )
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.target_vocabulary_size = target_vocabulary_size
        self.num_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation = keras.activations.get(activation)
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_key_value_heads = num_key_value_heads
        self.position_encoding = position_encoding
        self.max_wavelength = max_wavelength
        self.max_relative_position = max_relative_position
        self.max_positions = max_positions
        self.share_embeddings = share_embeddings
        self.tie_output_embeddings = tie_output_embeddings
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        self._build_embeddings()
        self._build_stacks(activation)

    def _build_embeddings(self):
        """Creates `target_embedding`, then `source_embedding` (the same
        layer when the embeddings are shared)."""
        self.target_embedding = TokenEmbedding(
            self.output_vocabulary_size,
            self.d_model,
            tie_weights=self.tie_output_embeddings,
            pad_id=self.pad_id,
            dtype=self.dtype_policy,
            name="target_embedding",
        )
        if self.share_embeddings:
            self.source_embedding = self.target_embedding
            return
        self.source_embedding = TokenEmbedding(
            self.vocabulary_size,
            self.d_model,
            pad_id=self.pad_id,
            dtype=self.dtype_policy,
            name="source_embedding",
        )

    def _build_stacks(self, activation):
        """Creates the `encoder`, then the `decoder`.

        Args:
            activation: the constructor's `activation` argument, passed to
                the stacks as given (their configs serialize it).
        """
        stack_kwargs = {name: getattr(self, name) for name in _STACK_ARGUMENTS}
        stack_kwargs.update(activation=activation, dtype=self.dtype_policy)
        self.encoder = Encoder(self.num_layers, name="encoder", **stack_kwargs)
        num_decoder_layers = self.num_decoder_layers or self.num_layers
        self.decoder = Decoder(num_decoder_layers, name="decoder", **stack_kwargs)

    @property
    def output_vocabulary_size(self):
        """Size of the target vocabulary (the logits' last dimension)."""
        return self.target_vocabulary_size or self.vocabulary_size

    @classmethod
    def presets(cls):
        """The preset names and their hyper-parameters."""
        return copy.deepcopy(PRESETS)

    @classmethod
    def from_preset(cls, preset, vocabulary_size, **overrides):
        """A new, untrained model with a preset's hyper-parameters.

        Args:
            preset: `"base"` or `"big"` (the paper's Table 3), or `"tiny"`.
            vocabulary_size: int, the (shared or source) vocabulary size.
            **overrides: any other constructor argument.

        Returns:
            A `Transformer`.
        """
        if preset not in PRESETS:
            raise ValueError(
                f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}."
            )
        return cls(vocabulary_size=vocabulary_size, **{**PRESETS[preset], **overrides})

    def build(self, inputs_shape=None):
        ids_shape = (None, None)
        self.target_embedding.build(ids_shape)
        if not self.share_embeddings:
            self.source_embedding.build(ids_shape)
        hidden_shape = (None, None, self.d_model)
        self.encoder.build(hidden_shape)
        self.decoder.build(hidden_shape, hidden_shape)
        self.built = True

    def _check_ids(self, name, ids):
        ids = ops.convert_to_tensor(ids) if not hasattr(ids, "dtype") else ids
        if len(ids.shape) != 2:
            raise ValueError(
                f"`{name}` must be token ids of shape (batch_size, length). "
                f"Received shape: {tuple(ids.shape)}"
            )
        if "int" not in str(ids.dtype):
            raise ValueError(
                f"`{name}` must be integer token ids. Received dtype: {ids.dtype}"
            )
        return ids

    def encode(self, source_ids, training=None):
        """Runs the encoder.

        Args:
            source_ids: int `(batch_size, source_length)`, padded with
                `pad_id`.
            training: bool.

        Returns:
            `(batch_size, source_length, d_model)` encoder outputs.
        """
        source_ids = self._check_ids("source", source_ids)
        x = self.source_embedding(source_ids)  # (B, S, d), scaled
        padding_mask = ops.not_equal(source_ids, self.pad_id)
        return self.encoder(x, padding_mask=padding_mask, training=training)

    def init_cache(self, encoder_outputs, max_length, beam_size=1, dtype=None):
        """An empty decoding cache; see `Decoder.init_cache`.

        Args:
            encoder_outputs: `(batch_size, source_length, d_model)`, from
                `encode`; their keys/values are projected here, once.
            max_length: int, the most target positions the cache holds.
            beam_size: int, decoder rows per source sentence (the beams
                of sentence `i` are decoder rows `i * beam_size ...`). Above
                1, the self-attention caches are beam caches (one row per
                sentence, `max_length * beam_size` slots) read through the
                cache's `"ancestry"`; the cross-attention keys/values keep
                one row per sentence, shared by its beams.
            dtype: float dtype of the key/value buffers. Defaults to the
                compute dtype; `generate()` picks float32 for a 16-bit
                policy under XLA on a CPU (see its `cache_dtype`).

        Returns:
            `{"self": [per decoder block {"key": (batch_size, kv_heads,
            max_length * beam_size, key_dim), "value": (same)}], "cross":
            [per block {"key": (batch_size, kv_heads, source_length,
            key_dim), "value": (same)}]}` (plus `"ancestry"` int32
            `(batch_size, beam_size, max_length)` when `beam_size > 1`)
            with `key_dim = d_model // num_heads` and `kv_heads =
            num_key_value_heads or num_heads`.
        """
        batch_size = ops.shape(encoder_outputs)[0]
        return self.decoder.init_cache(
            batch_size, max_length, encoder_outputs, beam_size=beam_size, dtype=dtype
        )

    def decode(
        self,
        target_ids,
        encoder_outputs,
        source_padding_mask=None,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
        output_projection=None,
    ):
        """Runs the decoder and the output projection.

        Args:
            target_ids: int `(batch_size, target_length)`, BOS first; with a
                cache, the ids at positions `cache_index, ...`.
            encoder_outputs: `(batch_size, source_length, d_model)`; not
                read when `cache` is given (it holds the projected keys and
                values).
            source_padding_mask: bool `(batch_size, source_length)`, `True`
                for real source tokens. With a cache whose cross-attention
                part is shared by beams, it may also have one row per
                sentence.
            cache: optional dict from `init_cache`.
            cache_index: int or scalar int tensor.
            return_attention_scores: bool, also return each block's weights.
            training: bool.
            output_projection: optional `(d_model, vocabulary)` kernel from
                `target_embedding.output_projection()`, computed once before
                a decoding loop (see `TokenEmbedding.output_projection`).

        Returns:
            float32 logits `(batch_size, target_length, vocabulary)`, then the
            attention weights if asked, then the updated cache if given.
        """
        target_ids = self._check_ids("target", target_ids)
        x = self.target_embedding(target_ids)  # (B, T, d), scaled
        outputs = self.decoder(
            x,
            encoder_outputs=encoder_outputs,
            encoder_padding_mask=source_padding_mask,
            padding_mask=ops.not_equal(target_ids, self.pad_id),
            cache=cache,
            cache_index=cache_index,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        logits = self.target_embedding.logits(  # (B, T, V), float32
            outputs[0], kernel=output_projection
        )
        outputs = (logits,) + outputs[1:]
        return outputs[0] if len(outputs) == 1 else outputs

    def generate(self, source_ids, **kwargs):
        """Translates `source_ids` by greedy or beam search, or samples.

        See `keras_transformer.decoding.generate` for the arguments
        (`max_length`, `beam_size`, `length_penalty`, `num_return_sequences`,
        `return_scores`, `return_attention`, `jit_compile`, `cache_dtype`,
        `sampling`, `temperature`, `top_k`, `top_p`, `seed`).
        """
        return generate(self, source_ids, **kwargs)

    @property
    def _default_save_signature(self):
        # Keras would trace a float32 "serving_default" from the build shapes
        # (`self.input_dtype`) when a SavedModel holding this model is saved;
        # token ids are int32 and `export.Translator` defines the signatures.
        return None

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TensorFlow backend under a multi-replica strategy: build from one
        # replica's batch, not Keras's replica average (float "token ids").
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or iterator is None or data_batch is not None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        return symbolic_build_from_one_replica(self, iterator)

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            missing = {"source", "target"} - set(inputs)
            if missing:
                raise ValueError(
                    "Transformer inputs must be a dict with keys 'source' and "
                    f"'target'. Missing: {sorted(missing)}"
                )
            source_ids, target_ids = inputs["source"], inputs["target"]
        elif isinstance(inputs, list | tuple) and len(inputs) == 2:
            source_ids, target_ids = inputs
        else:
            raise ValueError(
                "Transformer inputs must be {'source': ids, 'target': ids} or "
                f"(source, target). Received: {type(inputs).__name__}"
            )
        source_ids = self._check_ids("source", source_ids)
        encoder_outputs = self.encode(source_ids, training=training)
        return self.decode(
            target_ids,
            encoder_outputs,
            source_padding_mask=ops.not_equal(source_ids, self.pad_id),
            training=training,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "target_vocabulary_size": self.target_vocabulary_size,
                "num_layers": self.num_layers,
                "num_decoder_layers": self.num_decoder_layers,
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation_dropout": self.activation_dropout,
                "activation": keras.activations.serialize(self.activation),
                "normalize_first": self.normalize_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "num_key_value_heads": self.num_key_value_heads,
                "position_encoding": self.position_encoding,
                "max_wavelength": self.max_wavelength,
                "max_relative_position": self.max_relative_position,
                "max_positions": self.max_positions,
                "share_embeddings": self.share_embeddings,
                "tie_output_embeddings": self.tie_output_embeddings,
                "pad_id": self.pad_id,
                "bos_id": self.bos_id,
                "eos_id": self.eos_id,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("activation"), dict):
            config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)
