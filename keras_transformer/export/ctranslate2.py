"""Exporting a `Transformer` to CTranslate2, and translating with the export.

[CTranslate2](https://opennmt.net/CTranslate2/) is the inference engine of
OpenNMT: a C++ runtime with int8/float16 weights for CPUs and GPUs.
`to_ctranslate2` writes a trained `Transformer` through CTranslate2's public
`ctranslate2.specs` API (the way its own converters for OpenNMT-tf and
fairseq fill a `TransformerSpec`), with the SentencePiece model(s) beside it;
`CTranslate2Translator` reads that directory back and translates strings,
tokenizing exactly as the package's pipeline does. Translating runs no
TensorFlow: it uses `ctranslate2` and `sentencepiece` only (and the directory
serves without this package, from those two alone).

What the conversion keeps identical to the Keras model:

- the paper's positional encoding, sine on even and cosine on odd dimensions
  from position 0, written as an explicit table (CTranslate2's built-in
  encoding concatenates sines and cosines instead); learned positions are
  written as their table;
- embeddings multiplied by `sqrt(d_model)` on both sides;
- post-LN or pre-LN blocks, with the final LayerNorms of pre-LN only, and
  the model's LayerNorm epsilon;
- the fused query/key/value projection of self-attention and the fused
  key/value projection of encoder-decoder attention, in the model's
  `[queries | keys | values]` order; grouped-query attention
  (`num_key_value_heads`); Shaw et al. relative positions;
- the output projection (the tied target embedding, or its own kernel);
- the vocabularies in SentencePiece id order, `</s>` appended to every
  source (`add_source_eos`) and `<s>` as the decoder start token;
- `<pad>` and `<s>` are never generated: the output projection gets a bias
  of `-1e9` on their two ids (zero elsewhere), so no CTranslate2 client can
  produce them. Their probability is then renormalized away, where the
  package's own search only bans them after the softmax: token
  log-probabilities differ by `log(1 - p(<pad>) - p(<s>))`, greedy ids not
  at all.

Rotary position embeddings are refused (a `ValueError` naming the option):
CTranslate2's `TransformerEncoderSpec` adds an absolute position encoding
unless relative positions are used, so it would compute another model.

Beam search. CTranslate2 normalizes a finished hypothesis's log-probability
by `length ** length_penalty`; the package by GNMT's
`((5 + length) / 6) ** alpha` (Wu et al., 2016), which is not a power of
the length, so no CTranslate2 `length_penalty` reproduces it (the same
exponent favours long outputs more in CTranslate2). The searches also stop
differently: with a length penalty, CTranslate2 stops a sentence when
`beam_size * patience` hypotheses have finished; the package when no live
hypothesis can still beat its `beam_size` best finished ones. So
`CTranslate2Translator.translate` runs CTranslate2's beam search without
length penalty, asks for its `beam_size` finished hypotheses
(`num_hypotheses=beam_size`) and picks the best under the GNMT penalty
(length counted with `</s>`, as the package does). Without a penalty
(`alpha = 0`) both searches rank hypotheses by their summed
log-probabilities and stop when the best one has ended; greedy search is
the same algorithm in both. Used directly, `ctranslate2.Translator` with
`length_penalty=alpha` is the nearest one-option setting.

Example:

```python
from keras_transformer import Transformer
from keras_transformer.data import demo_pairs
from keras_transformer.export import CTranslate2Translator, to_ctranslate2
from keras_transformer.text import SubwordTokenizer, train_sentencepiece

pairs = demo_pairs("valid")  # English -> German number words
tokenizer = SubwordTokenizer(  # one vocabulary for both sides
    train_sentencepiece([text for pair in pairs for text in pair], vocab_size=60)
)
model = Transformer(  # a tiny model, not trained here: export a trained one
    vocabulary_size=tokenizer.vocab_size, num_layers=1, d_model=16, num_heads=2,
    d_ff=32,
)
to_ctranslate2(model, tokenizer, tokenizer, "ct2", quantization="int8")
translator = CTranslate2Translator("ct2")
translations = translator.translate(["four hundred"], beam_size=4)
```

References:
    - [CTranslate2](https://github.com/OpenNMT/CTranslate2)
    - [Wu et al., 2016](https://arxiv.org/abs/1609.08144) (GNMT penalty).
"""

import json
import os
import shutil

import numpy as np

from keras_transformer.special_tokens import UNK_ID

METADATA_FILE = "keras_transformer.json"
FORMAT_NAME = "ctranslate2"
QUANTIZATIONS = (
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
INSTALL_HINT = 'pip install "keras-transformer[ctranslate2]"'
# Tokens past the longest source that a translation may have (the paper's
# "input length + 50", as `decoding.generate`).
_EXTRA_LENGTH = 50
# Bias of the output projection on the ids that must never be generated.
_BANNED_BIAS = -1e9
_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "silu": "SWISH", "swish": "SWISH"}


def _gnmt_penalty(length, alpha):
    """GNMT's `((5 + length) / 6) ** alpha`, as `decoding.utils`."""
    return ((5.0 + length) / 6.0) ** alpha


def import_ctranslate2():
    """The `ctranslate2` module, or an `ImportError` naming the extra."""
    try:
        import ctranslate2
    except ImportError:
        raise ImportError(f"CTranslate2 is not installed: {INSTALL_HINT}") from None
    return ctranslate2


def is_ctranslate2_dir(path):
    """Whether `path` is a directory written by `to_ctranslate2`."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, METADATA_FILE)) and os.path.isfile(
        os.path.join(path, "model.bin")
    )


def check_convertible(model):
    """Raises a `ValueError` naming what CTranslate2 cannot express.

    Args:
        model: a `keras_transformer.Transformer`.

    Returns:
        The CTranslate2 activation name of the feed-forward networks.
    """
    import keras

    from keras_transformer.models.transformer import Transformer

    if not isinstance(model, Transformer):
        raise TypeError(
            "`model` must be a keras_transformer.Transformer. "
            f"Received: {type(model).__name__}"
        )
    if model.position_encoding == "rotary":
        raise ValueError(
            "CTranslate2 cannot express position_encoding='rotary' in an "
            "encoder-decoder model (its encoder would add absolute positions "
            "as well); export models with 'sinusoidal', 'learned' or "
            "'relative' positions."
        )
    activation = keras.activations.serialize(model.activation)
    if isinstance(activation, dict):
        activation = activation.get("config", {}).get("name", activation)
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"CTranslate2 cannot express activation={activation!r}; "
            f"supported: {sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[activation]


def _numpy(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _set_linear(spec, dense):
    """A Keras `Dense` (kernel `(in, out)`) into a `LinearSpec` (`(out, in)`)."""
    spec.weight = np.ascontiguousarray(_numpy(dense.kernel).T)
    if dense.bias is not None:
        spec.bias = _numpy(dense.bias)


def _set_fused_linear(spec, denses):
    """Several `Dense` layers over one input as one `LinearSpec`, in order."""
    spec.weight = np.concatenate([_numpy(dense.kernel).T for dense in denses])
    if all(dense.bias is not None for dense in denses):
        spec.bias = np.concatenate([_numpy(dense.bias) for dense in denses])


def _set_layer_norm(spec, layer_norm):
    spec.gamma = _numpy(layer_norm.gamma)
    spec.beta = _numpy(layer_norm.beta)


def _set_attention(spec, attention):
    """Our `MultiHeadAttention` into a CTranslate2 `MultiHeadAttentionSpec`.

    Self-attention: `linear[0]` is the fused `[q | k | v]` projection (ours
    is already fused in that order), `linear[1]` the output. Attention over
    the encoder: `linear[0]` the queries, `linear[1]` the fused `[k | v]`,
    `linear[2]` the output.
    """
    if attention.is_self_attention:
        _set_linear(spec.linear[0], attention.query_key_value_dense)
        if attention.max_relative_position is not None:
            spec.relative_position_keys = _numpy(attention.relative_key_embeddings)
            spec.relative_position_values = _numpy(attention.relative_value_embeddings)
    else:
        _set_linear(spec.linear[0], attention.query_dense)
        _set_fused_linear(spec.linear[1], [attention.key_dense, attention.value_dense])
    _set_linear(spec.linear[-1], attention.output_dense)


def _set_feed_forward(spec, block):
    _set_linear(spec.linear_0, block.feed_forward.inner_dense)
    _set_linear(spec.linear_1, block.feed_forward.output_dense)
    _set_layer_norm(spec.layer_norm, block.feed_forward_layer_norm)


def _position_table(stack, d_model, max_positions):
    """`(positions, d_model)` float32: what the stack adds at each position.

    Evaluated by the stack's own layer, so the table holds exactly the
    values the Keras model adds (sine at even, cosine at odd dimensions,
    from position 0; or the learned table).
    """
    import keras

    if stack.position_encoding == "learned":
        return _numpy(stack.position_embedding.embeddings)
    zeros = np.zeros((1, max_positions, d_model), np.float32)
    table = stack.position_embedding(zeros)[0]
    return np.asarray(keras.ops.convert_to_numpy(table), dtype=np.float32)


def _set_stack_common(spec, stack, d_model, max_positions):
    """Position table and final (pre-LN) LayerNorm of an encoder or decoder."""
    if stack.position_encoding in ("sinusoidal", "learned"):
        spec.position_encodings.encodings = _position_table(
            stack, d_model, max_positions
        )
    if stack.normalize_first:
        _set_layer_norm(spec.layer_norm, stack.final_layer_norm)


def _set_encoder(spec, model, max_positions):
    spec.embeddings[0].weight = _numpy(model.source_embedding.embeddings)
    spec.scale_embeddings = True
    _set_stack_common(spec, model.encoder, model.d_model, max_positions)
    for layer_spec, block in zip(spec.layer, model.encoder.blocks):
        _set_attention(layer_spec.self_attention, block.self_attention)
        _set_layer_norm(
            layer_spec.self_attention.layer_norm, block.self_attention_layer_norm
        )
        _set_feed_forward(layer_spec.ffn, block)


def _set_decoder(spec, model, max_positions):
    embedding = model.target_embedding
    spec.embeddings.weight = _numpy(embedding.embeddings)
    spec.scale_embeddings = True
    _set_stack_common(spec, model.decoder, model.d_model, max_positions)
    for layer_spec, block in zip(spec.layer, model.decoder.blocks):
        _set_attention(layer_spec.self_attention, block.self_attention)
        _set_layer_norm(
            layer_spec.self_attention.layer_norm, block.self_attention_layer_norm
        )
        _set_attention(layer_spec.attention, block.cross_attention)
        _set_layer_norm(
            layer_spec.attention.layer_norm, block.cross_attention_layer_norm
        )
        _set_feed_forward(layer_spec.ffn, block)
    if embedding.tie_weights:
        spec.projection.weight = _numpy(embedding.embeddings)  # (V, d)
    else:
        spec.projection.weight = np.ascontiguousarray(_numpy(embedding.output_kernel).T)
    bias = np.zeros((model.output_vocabulary_size,), np.float32)
    bias[[model.pad_id, model.bos_id]] = _BANNED_BIAS
    spec.projection.bias = bias


def _model_spec(model, activation, max_positions):
    """The filled `ctranslate2.specs.TransformerSpec` of `model`."""
    specs = import_ctranslate2().specs
    kv_heads = model.num_key_value_heads
    if kv_heads == model.num_heads:
        kv_heads = None
    options = {
        "pre_norm": model.normalize_first,
        "activation": getattr(specs.Activation, activation),
        "relative_position": model.position_encoding == "relative",
        "num_heads_kv": kv_heads,
    }
    encoder = specs.TransformerEncoderSpec(model.num_layers, model.num_heads, **options)
    decoder = specs.TransformerDecoderSpec(
        model.num_decoder_layers or model.num_layers, model.num_heads, **options
    )
    spec = specs.TransformerSpec(encoder, decoder)
    if kv_heads is not None:
        spec.config.add_attribute("multi_query_attention", True)
    _set_encoder(spec.encoder, model, max_positions)
    _set_decoder(spec.decoder, model, max_positions)
    return spec


def _pieces(tokenizer):
    """The tokenizer's pieces in id order (its CTranslate2 vocabulary)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _check_vocabularies(model, source_pieces, target_pieces):
    for side, pieces, size in (
        ("source", source_pieces, model.vocabulary_size),
        ("target", target_pieces, model.output_vocabulary_size),
    ):
        if len(pieces) != size:
            raise ValueError(
                f"The {side} tokenizer has {len(pieces)} pieces but the model's "
                f"{side} vocabulary has {size} ids; export the tokenizers the "
                "model was trained with."
            )


def _check_arguments(path, quantization, max_positions):
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be None or one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if max_positions is not None and (
        not isinstance(max_positions, int) or max_positions < 2
    ):
        raise ValueError(
            f"`max_positions` must be an integer >= 2. Received: {max_positions}"
        )
    path = os.fspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise FileExistsError(
            f"{path} exists and is not an empty directory; CTranslate2 exports "
            "are written to a new directory (nothing is overwritten)."
        )
    return path


def to_ctranslate2(
    model,
    source_tokenizer,
    target_tokenizer,
    path,
    quantization=None,
    max_positions=None,
):
    """Writes `model` and its tokenizers as a CTranslate2 model directory.

    The directory holds CTranslate2's `model.bin`, `config.json` and
    vocabularies (`shared_vocabulary.json`, or a source and a target one),
    the SentencePiece model(s) (`shared.model`, or `source.model` and
    `target.model`) and `keras_transformer.json`, which
    `CTranslate2Translator` reads. See the module docstring for what the
    conversion preserves.

    Args:
        model: a trained `keras_transformer.Transformer`.
        source_tokenizer: its source `keras_transformer.text.SubwordTokenizer`.
        target_tokenizer: its target tokenizer (the same object for a
            shared vocabulary).
        path: the output directory; must not exist or be empty.
        quantization: `None` (the weights' float32) or one of
            `QUANTIZATIONS` (`"int8"`, `"int8_float32"`, `"float16"`, ...):
            the type CTranslate2 stores the weights in.
        max_positions: int, positions of the written sinusoidal table (the
            longest source, and the longest translation, the export can
            handle). Defaults to 1024; learned positions always write the
            model's `max_positions`.

    Returns:
        `path`.

    Raises:
        ValueError: for what CTranslate2 cannot express (rotary positions,
            an unsupported activation), tokenizers that do not match the
            model, or a bad argument.
        FileExistsError: if `path` exists and is not empty.
        ImportError: if `ctranslate2` is not installed.
    """
    activation = check_convertible(model)
    path = _check_arguments(path, quantization, max_positions)
    import_ctranslate2()
    if model.position_encoding == "learned":
        max_positions = model.max_positions
    max_positions = max_positions or 1024
    source_pieces, target_pieces = _pieces(source_tokenizer), _pieces(target_tokenizer)
    _check_vocabularies(model, source_pieces, target_pieces)
    if not model.built:
        model.build()
    spec = _model_spec(model, activation, max_positions)
    spec.register_source_vocabulary(source_pieces)
    spec.register_target_vocabulary(target_pieces)
    spec.config.unk_token = target_pieces[UNK_ID]
    spec.config.bos_token = target_pieces[model.bos_id]
    spec.config.eos_token = target_pieces[model.eos_id]
    spec.config.decoder_start_token = target_pieces[model.bos_id]
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = float(model.layer_norm_epsilon)
    spec.validate()
    spec.optimize(quantization=quantization)
    # Written beside `path`, then renamed: never half an export at `path`.
    staging = f"{os.path.abspath(path)}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        spec.save(staging)
        _write_tokenizers(staging, source_tokenizer, target_tokenizer, max_positions)
        if os.path.isdir(path):
            os.rmdir(path)  # empty (checked above)
        os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _write_tokenizers(path, source_tokenizer, target_tokenizer, max_positions):
    shared = source_tokenizer is target_tokenizer or (
        source_tokenizer.model_proto == target_tokenizer.model_proto
    )
    files = (
        {"source": "shared.model", "target": "shared.model"}
        if shared
        else {"source": "source.model", "target": "target.model"}
    )
    for side, tokenizer in (("source", source_tokenizer), ("target", target_tokenizer)):
        with open(os.path.join(path, files[side]), "wb") as f:
            f.write(tokenizer.model_proto)
    metadata = {
        "format": FORMAT_NAME,
        "source_tokenizer": files["source"],
        "target_tokenizer": files["target"],
        "max_positions": max_positions,
        "max_extra_length": _EXTRA_LENGTH,
    }
    with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
        f.write("\n")


class CTranslate2Translator:
    """Translates strings with a directory written by `to_ctranslate2`.

    Input handling follows `keras_transformer.export.Translator`: sentences
    are tokenized with the saved SentencePiece model, cut to
    `max_input_tokens - 1` pieces, and CTranslate2 appends `</s>`; an empty
    (or all-whitespace) sentence translates to the empty string; a
    translation has at most 50 tokens more than the longest source of its
    batch (and at most the export's `max_positions`).

    Args:
        path: the directory written by `to_ctranslate2`.
        device: `"cpu"`, `"cuda"` or `"auto"`.
        compute_type: CTranslate2's compute type (`"default"`: the type the
            weights were saved in, where the device supports it).
        **kwargs: further `ctranslate2.Translator` arguments
            (`inter_threads`, `intra_threads`, ...). `intra_threads`
            defaults to the CPU count, at most 4 (CTranslate2's own default
            is 4 threads, which on a machine with fewer cores compete with
            each other).

    Example:

    ```python
    from keras_transformer import Transformer
    from keras_transformer.export import CTranslate2Translator, to_ctranslate2
    from keras_transformer.text import SubwordTokenizer, train_sentencepiece

    tokenizer = SubwordTokenizer(
        train_sentencepiece(["four hundred", "vierhundert"] * 20, vocab_size=30)
    )
    model = Transformer(  # untrained: the export of a trained one translates
        vocabulary_size=tokenizer.vocab_size, num_layers=1, d_model=16,
        num_heads=2, d_ff=32,
    )
    to_ctranslate2(model, tokenizer, tokenizer, "ct2")

    translator = CTranslate2Translator("ct2")
    translator.translate(["four hundred"], beam_size=4, length_penalty=0.6)
    translator.translate(["four hundred"], beam_size=1)  # greedy search
    ```
    """

    def __init__(self, path, device="cpu", compute_type="default", **kwargs):
        import sentencepiece as spm

        ctranslate2 = import_ctranslate2()
        path = os.fspath(path)
        if not is_ctranslate2_dir(path):
            raise ValueError(
                f"{path} is not a CTranslate2 export (it has no {METADATA_FILE} "
                "and model.bin; write one with `keras-transformer export "
                "--format ctranslate2`)."
            )
        with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as f:
            self.metadata = json.load(f)
        self.path = path
        self.source_processor = spm.SentencePieceProcessor(
            model_file=os.path.join(path, self.metadata["source_tokenizer"])
        )
        self.target_processor = spm.SentencePieceProcessor(
            model_file=os.path.join(path, self.metadata["target_tokenizer"])
        )
        kwargs.setdefault("intra_threads", min(4, os.cpu_count() or 1))
        self.translator = ctranslate2.Translator(
            path, device=device, compute_type=compute_type, **kwargs
        )

    def tokenize(self, sentences, max_input_tokens=256):
        """Source pieces per sentence, cut to `max_input_tokens - 1` (EOS
        is appended by CTranslate2)."""
        keep = min(max_input_tokens, self.metadata["max_positions"]) - 1
        return [
            self.source_processor.encode(sentence, out_type=str)[:keep]
            for sentence in sentences
        ]

    def translate_tokens(
        self,
        source_tokens,
        beam_size=4,
        length_penalty=0.6,
        return_scores=False,
    ):
        """Target pieces (no `</s>`) for source pieces (no `</s>`).

        Args:
            source_tokens: list of lists of source pieces, one batch.
            beam_size: int, 1 for greedy search.
            length_penalty: float, GNMT `alpha` of beam search, applied by
                rescoring CTranslate2's `beam_size` finished hypotheses (see
                the module docstring).
            return_scores: bool, also return the scores: summed token
                log-probabilities for greedy search, the length-penalized
                ones for beam search (as `Transformer.generate`).

        Returns:
            list of lists of target pieces (and a list of float scores).
        """
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(
                f"`beam_size` must be a positive integer. Received: {beam_size}"
            )
        if not length_penalty >= 0:
            raise ValueError(
                "`length_penalty` must be a non-negative number. "
                f"Received: {length_penalty}"
            )
        if not source_tokens:
            return ([], []) if return_scores else []
        longest = max(len(tokens) for tokens in source_tokens) + 1  # + EOS
        max_length = min(
            longest + self.metadata["max_extra_length"], self.metadata["max_positions"]
        )
        alpha = length_penalty if beam_size > 1 else 0.0  # greedy: no penalty
        rescore = alpha != 0
        results = self.translator.translate_batch(
            source_tokens,
            beam_size=beam_size,
            length_penalty=0.0,
            num_hypotheses=beam_size if rescore else 1,
            max_decoding_length=max_length,
            max_input_length=0,
            return_scores=True,
        )
        tokens, scores = [], []
        for result in results:
            penalties = [
                _gnmt_penalty(min(len(h) + 1, max_length), alpha)
                for h in result.hypotheses
            ]
            normalized = [s / p for s, p in zip(result.scores, penalties)]
            best = max(range(len(normalized)), key=normalized.__getitem__)
            tokens.append(result.hypotheses[best])
            scores.append(normalized[best])
        return (tokens, scores) if return_scores else tokens

    def translate(
        self,
        sentences,
        beam_size=4,
        length_penalty=0.6,
        max_input_tokens=256,
        batch_size=64,
    ):
        """Translates a list of strings; returns a list of strings.

        Args:
            sentences: list of `str`.
            beam_size: int, 1 for greedy search.
            length_penalty: float, see the module docstring.
            max_input_tokens: int, source tokens kept per sentence, `</s>`
                included.
            batch_size: int, sentences per CTranslate2 call (the decoding
                length limit is set per call, from its longest source).

        Returns:
            list of `str`, one per sentence.
        """
        if not isinstance(max_input_tokens, int) or max_input_tokens < 2:
            raise ValueError(
                "`max_input_tokens` must be an integer >= 2 (a token and EOS). "
                f"Received: {max_input_tokens}"
            )
        sentences = list(sentences)
        translations = []
        for start in range(0, len(sentences), batch_size):
            batch = sentences[start : start + batch_size]
            tokens = self.translate_tokens(
                self.tokenize(batch, max_input_tokens), beam_size, length_penalty
            )
            for sentence, pieces in zip(batch, tokens):
                ids = [self.target_processor.piece_to_id(p) for p in pieces]
                text = self.target_processor.decode(ids) if sentence.strip() else ""
                translations.append(text)
        return translations

    def __call__(self, sentences):
        """`translate(sentences)` with the default settings."""
        return self.translate(sentences)
