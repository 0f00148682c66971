"""A Transformer's attention weights for one sentence, and `explain()`."""

import numpy as np
from keras import ops

from keras_transformer.viz.plots import plot_attention
from keras_transformer.viz.plots import save_figure

KINDS = ("encoder", "decoder", "cross")

_KIND_TITLES = {
    "encoder": "Encoder self-attention",
    "decoder": "Decoder masked self-attention",
    "cross": "Encoder-decoder attention",
}
_SCORE_KEYS = {"decoder": "self_attention", "cross": "cross_attention"}


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")


def _one_sentence(ids, name):
    """Ids `(length,)` or `(batch_size, length)` -> int32 numpy `(1, length)`."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(
            f"`{name}` must be token ids of shape (length,) or (batch_size, "
            f"length), with at least one token. Received shape: {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"`{name}` must be integer token ids. Received: {ids.dtype}")
    return ids[:1].astype(np.int32)


def _translate(model, source, generate_kwargs):
    """Greedy (or beam) translation of `source` `(1, S)`.

    Returns:
        `(decoder_inputs (1, n), generated (n,))`: the generated ids up to
        and including the first EOS, and the decoder inputs that produced
        them (BOS, then all generated ids but the last), so that row `i` of
        the decoder's attention is the step that produced `generated[i]`.
    """
    generated = model.generate(source, **(generate_kwargs or {}))
    if isinstance(generated, dict):  # with return_scores / return_attention
        generated = generated["ids"]
    generated = np.asarray(generated)
    if generated.ndim != 2:
        raise ValueError(
            "`generate_kwargs` must make `generate` return one sequence per "
            f"sentence (ids of shape (1, length)). Received shape: {generated.shape}"
        )
    generated = generated[0]
    eos = np.flatnonzero(generated == model.eos_id)
    if eos.size:
        generated = generated[: eos[0] + 1]
    if generated.size == 0:
        raise ValueError(
            "The model generated only padding for this sentence (an untrained "
            "model?); pass `target_ids` to see the attention over a given target."
        )
    decoder_inputs = np.concatenate([[model.bos_id], generated[:-1]]).astype(np.int32)
    return decoder_inputs[None], generated.astype(np.int32)


def attention_weights(
    model,
    source_ids,
    target_ids=None,
    kind="encoder",
    return_tokens=False,
    generate_kwargs=None,
):
    """The attention weights of a `Transformer` for one sentence, as numpy.

    The weights are the layers' own `return_attention_scores` outputs (so
    rows sum to 1 and masked positions are exactly 0), computed in inference
    mode (no dropout) for batch row 0.

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int ids `(source_length,)` or `(batch_size,
            source_length)` (only row 0 is used), EOS-terminated as in
            training, optionally padded with `pad_id`.
        target_ids: optional decoder inputs (BOS first) `(target_length,)` or
            `(batch_size, target_length)`. When `None` and `kind` is
            `"decoder"` or `"cross"`, the model translates the sentence first
            with `model.generate(source_ids, **generate_kwargs)` and the
            decoder is run on its own translation: decoder inputs are BOS
            followed by the generated ids but the last, so query row `i` is
            the step that produced generated token `i` (the cross-attention
            is then the alignment of the model's translation, and its mean
            over heads in the last layer equals `generate(...,
            return_attention=True)["attention"]`; up to rounding under a
            16-bit policy on a CPU, where `generate` keeps float32 caches).
        kind: `"encoder"` (encoder self-attention), `"decoder"` (masked
            decoder self-attention) or `"cross"` (encoder-decoder attention).
        return_tokens: bool, also return the ids labelling the two axes.
        generate_kwargs: optional dict of `generate` arguments
            (`max_length`, `beam_size`, `jit_compile`, ...).

    Returns:
        float32 numpy array, for `"encoder"` `(layers, heads, S, S)`, for
        `"decoder"` `(layers, heads, T, T)`, for `"cross"`
        `(layers, heads, T, S)`. With `return_tokens`, a tuple
        `(weights, query_ids, key_ids)` of numpy int arrays: the source ids,
        the decoder inputs, or for `"cross"` after a translation the
        generated ids (the token each row produced).

    Example:

    >>> import numpy as np
    >>> from keras_transformer import Transformer
    >>> model = Transformer(vocabulary_size=20, num_layers=2, d_model=8,
    ...                     num_heads=2, d_ff=16)
    >>> attention_weights(model, np.array([5, 6, 7, 3])).shape
    (2, 2, 4, 4)
    >>> attention_weights(model, [5, 6, 3], [2, 9], kind="cross").shape
    (2, 2, 2, 3)
    """
    result = _attention(model, source_ids, target_ids, kind, generate_kwargs)
    if return_tokens:
        return result["weights"], result["query_ids"], result["key_ids"]
    return result["weights"]


def _attention(model, source_ids, target_ids, kind, generate_kwargs):
    """`attention_weights` as a dict, with `"generated"` (ids or `None`)."""
    _check_kind(kind)
    if not model.built:
        model.build()
    source = _one_sentence(source_ids, "source_ids")
    source_tensor = ops.convert_to_tensor(source, "int32")
    source_mask = ops.not_equal(source_tensor, model.pad_id)
    generated = None
    if kind == "encoder":
        x = model.source_embedding(source_tensor)  # (1, S, d), scaled
        _, scores = model.encoder(
            x, padding_mask=source_mask, return_attention_scores=True, training=False
        )
        weights = np.stack([np.asarray(block[0]) for block in scores])
        query_ids = key_ids = source[0]
    else:
        if target_ids is None:
            target, generated = _translate(model, source, generate_kwargs)
        else:
            target = _one_sentence(target_ids, "target_ids")
        encoder_outputs = model.encode(source_tensor, training=False)
        _, scores = model.decode(
            ops.convert_to_tensor(target, "int32"),
            encoder_outputs,
            source_padding_mask=source_mask,
            return_attention_scores=True,
            training=False,
        )
        key = _SCORE_KEYS[kind]
        weights = np.stack([np.asarray(block[key][0]) for block in scores])
        query_ids = target[0]
        key_ids = target[0] if kind == "decoder" else source[0]
        if kind == "cross" and generated is not None:
            query_ids = generated
    return {
        "weights": weights.astype(np.float32),
        "query_ids": np.asarray(query_ids),
        "key_ids": np.asarray(key_ids),
        "generated": generated,
    }


def _resolve_layer(layer, num_layers):
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ValueError(f"`layer` must be an int. Received: layer={layer!r}")
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"Layer {layer} is out of range: this stack has {num_layers} layers "
            f"(valid: 0..{num_layers - 1}, or negative from the end)."
        )
    return int(layer) % num_layers


def explain(
    model,
    source_tokenizer,
    target_tokenizer,
    sentence,
    kind="encoder",
    layer=-1,
    head=None,
    output=None,
    generate_kwargs=None,
):
    """Tokenizes a sentence, computes one layer's attention and plots it.

    The source ids are the sentence's pieces followed by EOS (as in
    training). For `"decoder"` and `"cross"` the model first translates the
    sentence (see `attention_weights`); the figure title shows the
    translation.

    Args:
        model: a `keras_transformer.Transformer`.
        source_tokenizer: `keras_transformer.text.SubwordTokenizer` of the
            source language.
        target_tokenizer: tokenizer of the target language (may be the
            same object).
        sentence: str, the source sentence.
        kind: `"encoder"`, `"decoder"` or `"cross"`.
        layer: int, the block (0-based; negative counts from the end, so the
            default `-1` is the last).
        head: `None` (all heads, one subplot each), an int or a list of ints.
        output: optional `.png`/`.svg` path to save the figure to.
        generate_kwargs: optional dict of `generate` arguments.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    _check_kind(kind)
    if not isinstance(sentence, str):
        raise TypeError(f"`sentence` must be a str. Received: {type(sentence)}")
    source_ids = np.asarray(
        source_tokenizer.encode([sentence])[0] + [model.eos_id], dtype=np.int32
    )
    result = _attention(model, source_ids, None, kind, generate_kwargs)
    weights = result["weights"]
    index = _resolve_layer(layer, weights.shape[0])
    query_tokenizer = source_tokenizer if kind == "encoder" else target_tokenizer
    key_tokenizer = target_tokenizer if kind == "decoder" else source_tokenizer
    title = f"{_KIND_TITLES[kind]}, layer {index}\n{sentence!r}"
    if result["generated"] is not None:
        translation = target_tokenizer.decode([result["generated"].tolist()])[0]
        title += f" -> {translation!r}"
    figure = plot_attention(
        weights[index],
        query_tokenizer.id_to_piece(result["query_ids"]),
        key_tokenizer.id_to_piece(result["key_ids"]),
        heads=head,
        title=title,
    )
    if output is not None:
        save_figure(figure, output)
    return figure


def load_model_dir(model_dir):
    """`(model, source_tokenizer, target_tokenizer)` of a trained-model directory.

    See `keras_transformer.model_directory.load_model_and_vocabularies`.
    """
    from keras_transformer.model_directory import load_model_and_vocabularies

    return load_model_and_vocabularies(model_dir)


def explain_model_dir(
    model_dir,
    sentence,
    output,
    kind="encoder",
    layer=-1,
    head=None,
    generate_kwargs=None,
):
    """`keras-transformer explain --model DIR SENTENCE --output FILE`.

    Loads the model and vocabularies (see `load_model_dir`), then runs
    `explain`.

    Args:
        model_dir: str, the trained model's directory.
        sentence: str, the source sentence.
        output: `.png` or `.svg` path.
        kind: `"encoder"`, `"decoder"` or `"cross"`.
        layer: int. head: `None` or int.
        generate_kwargs: optional dict of `generate` arguments.

    Returns:
        The `matplotlib.figure.Figure` that was saved.
    """
    model, source_tokenizer, target_tokenizer = load_model_dir(model_dir)
    return explain(
        model,
        source_tokenizer,
        target_tokenizer,
        sentence,
        kind=kind,
        layer=layer,
        head=head,
        output=output,
        generate_kwargs=generate_kwargs,
    )
