"""A self-contained translator: strings in, strings out, servable by TF Serving."""

import numpy as np
import tensorflow as tf

from keras_transformer.decoding.beam import beam_search
from keras_transformer.decoding.generation import EXTRA_LENGTH
from keras_transformer.decoding.generation import check_sampling_settings
from keras_transformer.decoding.generation import search_function
from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.decoding.sampling import seed_key
from keras_transformer.text.subword_tokenizer import sanitize_utf8

# Batch sizes the XLA search is compiled for: one sentence (a latency-bound
# request), small batches, and the batches of 32 and 64 that evaluation and
# the command line send. A batch is padded up to the next size (a request
# of more than 64 is cut into chunks of 64), so no more than 4x the work is
# wasted on padding beyond 8 sentences.
DEFAULT_BATCH_BUCKETS = (1, 8, 32, 64)
# The smallest source length bucket; the others double up to
# `max_input_tokens`, the last one.
_SHORTEST_LENGTH_BUCKET = 16


def default_length_buckets(max_input_tokens):
    """Source length buckets: 16, 32, 64, ... below `max_input_tokens`, then
    `max_input_tokens` itself.

    Args:
        max_input_tokens: int, the longest source (EOS included).

    Returns:
        tuple of int, increasing, ending with `max_input_tokens`.

    Example:

    >>> default_length_buckets(256)
    (16, 32, 64, 128, 256)
    >>> default_length_buckets(100)
    (16, 32, 64, 100)
    """
    buckets = []
    length = _SHORTEST_LENGTH_BUCKET
    while length < max_input_tokens:
        buckets.append(length)
        length *= 2
    return (*buckets, max_input_tokens)


class Translator(tf.Module):
    """Tokenize -> generate -> detokenize, all inside one TensorFlow graph.

    The translator holds the model's variables and the SentencePiece models,
    so a SavedModel of it needs nothing but `tensorflow` and
    `tensorflow_text` to run (and stock TF Serving, which links the
    tensorflow-text kernels, can serve it). The search is traced without
    XLA: its key/value caches are written in place by the core
    `InplaceUpdate` op into buffers each request allocates, and attention
    reads only the positions written so far (no `XlaDynamicUpdateSlice`;
    see `layers.attention_cache.in_place_writes`).

    Input handling, per sentence of the batch:

    - invalid UTF-8 bytes are replaced by U+FFFD before tokenizing (never an
      error, never a crash of the server);
    - an empty (or all-whitespace) sentence translates to the empty string;
    - a sentence longer than `max_input_tokens` subword tokens (EOS
      included) is truncated to that many tokens;
    - generation stops at EOS or `max_extra_length` tokens past the longest
      (possibly truncated) source of the batch.

    With `sampling=True`, `translate` draws each translation from the model
    (as for back-translation; see `keras_transformer.decoding.generate`)
    instead of beam search. Its random numbers are keyed by the seed and a
    call counter (a variable, saved with the translator), so successive
    calls draw afresh while a translator made with the same seed repeats
    the same draws for the same calls.

    `translate_xla` and `translate_greedy_xla` run the same searches
    compiled with XLA (tokenizing and detokenizing stay outside the compiled
    part): the source ids are padded to a length bucket (`length_buckets`)
    and the batch to a batch bucket (`batch_buckets`; a larger batch is cut
    into chunks of the largest), so XLA compiles at most one search per
    (batch bucket, length bucket). The search stops where `translate` would
    (source length + `max_extra_length` of the unpadded batch), so they
    return `translate`'s translations and scores, up to XLA's floating-point
    rounding. `translate_fast` runs them in process (what
    `evaluation.evaluate_translator` and `translate_all` use). A sampling
    translator has `translate_greedy_xla` but no `translate_xla`.

    Besides the signatures, a SavedModel of the translator keeps two
    functions for clients that load it with `tf.saved_model.load`:
    `settings()` (a dict of scalars: `beam_size`, `length_penalty`,
    `max_input_tokens`, `sampling`, `temperature`, `top_k` (0: none),
    `top_p`, `seed`) and `count_source_tokens(sentences)` (each sentence's
    subword tokens before truncation, EOS included), which tell a caller
    what the export does and which inputs it cuts.

    Args:
        model: a trained `keras_transformer.Transformer`.
        source_tokenizer: `keras_transformer.text.SubwordTokenizer` of the
            source language.
        target_tokenizer: tokenizer of the target language (may be the same
            object).
        beam_size: int, beam size of `translate` (1 = greedy).
        length_penalty: float, GNMT alpha of beam search.
        max_input_tokens: int, source tokens kept per sentence.
        max_extra_length: int, the paper's "input length + 50".
        append_eos: bool, whether source ids end with EOS (as in training).
        sampling: bool, `translate` samples (needs `beam_size=1`).
        temperature: positive float, sampling temperature.
        top_k: int or `None`, sample from the `top_k` most probable tokens.
        top_p: float in `(0, 1]` or `None`, nucleus sampling.
        seed: int in `[0, 2**32 - 1]` or `None` (drawn from NumPy's global
            generator).
        batch_buckets: positive ints, the batch sizes the XLA searches are
            compiled for (default `DEFAULT_BATCH_BUCKETS`: 1, 8, 32, 64).
        length_buckets: positive ints, the source lengths (EOS included)
            they are compiled for; `max_input_tokens` is always the last.
            Defaults to `default_length_buckets(max_input_tokens)`: 16, 32,
            64, ... then `max_input_tokens`.

    Example:

    ```python
    import tensorflow as tf
    from keras_transformer import Transformer
    from keras_transformer.data import demo_pairs
    from keras_transformer.export import Translator, export_translator
    from keras_transformer.text import SubwordTokenizer, train_sentencepiece

    pairs = demo_pairs("valid")
    tokenizer = SubwordTokenizer(
        train_sentencepiece([text for pair in pairs for text in pair], 60)
    )
    model = Transformer(vocabulary_size=tokenizer.vocab_size, num_layers=1,
                        d_model=16, num_heads=2, d_ff=32)  # train it first
    translator = Translator(model, tokenizer, tokenizer, beam_size=2,
                            max_input_tokens=16)
    print(translator.translate(tf.constant(["four hundred"]))["translations"])
    print(translator.translate_fast(["four hundred"])["translations"])  # XLA
    print(export_translator(translator, "export"))  # export/1
    ```
    """

    def __init__(
        self,
        model,
        source_tokenizer,
        target_tokenizer,
        beam_size=4,
        length_penalty=0.6,
        max_input_tokens=256,
        max_extra_length=EXTRA_LENGTH,
        append_eos=True,
        sampling=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
        batch_buckets=DEFAULT_BATCH_BUCKETS,
        length_buckets=None,
    ):
        super().__init__(name="translator")
        for name, value in (
            ("beam_size", beam_size),
            ("max_input_tokens", max_input_tokens),
            ("max_extra_length", max_extra_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {value}"
                )
        sampled = _check_sampling(
            model, beam_size, sampling, temperature, top_k, top_p, seed
        )
        if model.position_encoding == "learned":
            # Learned positions stop at max_positions: clamp both lengths.
            max_input_tokens = min(max_input_tokens, model.max_positions)
        self.batch_buckets = _check_buckets("batch_buckets", batch_buckets)
        self.length_buckets = _length_buckets(length_buckets, max_input_tokens)
        if not model.built:
            model.build()
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.max_input_tokens = max_input_tokens
        self.max_extra_length = max_extra_length
        self.append_eos = append_eos
        self.sampling = bool(sampling)
        self.temperature, self.top_k, self.top_p, self.seed = sampled
        if self.sampling:
            # One key per call: [seed, number of earlier calls].
            self.sampling_calls = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="sampling_calls"
            )
        signature = tf.TensorSpec([None], tf.string, name="sentences")
        self.translate = tf.function(
            lambda sentences: self._translate(
                sentences, self.beam_size, sampling=self.sampling
            ),
            input_signature=[signature],
            autograph=False,
        )
        self.translate_greedy = tf.function(
            lambda sentences: self._translate(sentences, 1),
            input_signature=[signature],
            autograph=False,
        )
        self.count_source_tokens = tf.function(
            self._count_source_tokens, input_signature=[signature], autograph=False
        )
        self.settings = tf.function(self._settings, input_signature=[], autograph=False)
        self._xla = _XlaSearches(self)
        self.translate_greedy_xla = tf.function(
            lambda sentences: self._translate_xla(sentences, self._xla.graph[1]),
            input_signature=[signature],
            autograph=False,
        )
        if not self.sampling:
            self.translate_xla = tf.function(
                lambda sentences: self._translate_xla(
                    sentences, self._xla.graph[self.beam_size]
                ),
                input_signature=[signature],
                autograph=False,
            )

    def _settings(self):
        """What `translate` does, as scalar tensors (see the class docstring)."""
        return {
            "beam_size": tf.constant(self.beam_size, tf.int32),
            "length_penalty": tf.constant(self.length_penalty, tf.float32),
            "max_input_tokens": tf.constant(self.max_input_tokens, tf.int32),
            "sampling": tf.constant(self.sampling),
            "temperature": tf.constant(self.temperature, tf.float32),
            "top_k": tf.constant(self.top_k or 0, tf.int32),
            "top_p": tf.constant(self.top_p or 1.0, tf.float32),
            "seed": tf.constant(self.seed, tf.int64),
        }

    def _count_source_tokens(self, sentences):
        """int32 `(B,)`: each sentence's subword tokens, EOS included, before
        truncation to `max_input_tokens`."""
        ids = self.source_tokenizer.tokenize(sanitize_utf8(sentences))
        return tf.cast(ids.row_lengths(), tf.int32) + int(self.append_eos)

    def _encode(self, sentences):
        """Strings `(B,)` -> int32 ids `(B, S)` padded with 0, and emptiness."""
        sentences = sanitize_utf8(sentences)
        empty = tf.equal(tf.strings.length(tf.strings.strip(sentences)), 0)
        ids = tf.cast(self.source_tokenizer.tokenize(sentences), tf.int32)
        keep = self.max_input_tokens - int(self.append_eos)
        ids = ids[:, :keep]
        if self.append_eos:
            eos = tf.fill([ids.nrows(), 1], tf.constant(self.model.eos_id, tf.int32))
            ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
        return ids.to_tensor(default_value=self.model.pad_id), empty

    def _max_length(self, source_length):
        """The most tokens generated for sources of `source_length` tokens."""
        max_length = source_length + self.max_extra_length
        if self.model.position_encoding == "learned":
            max_length = tf.minimum(max_length, self.model.max_positions)
        return max_length

    def _translate(self, sentences, beam_size, sampling=False):
        source_ids, empty = self._encode(sentences)
        max_length = self._max_length(tf.shape(source_ids)[1])
        search = search_function(
            self.model,
            max_length,
            beam_size=beam_size,
            length_penalty=self.length_penalty,
            sampling=sampling,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
        )
        if sampling:
            calls = self.sampling_calls.assign_add(1) - 1
            key = tf.stack([tf.constant(self.seed, tf.int64), calls])
            outputs = search(source_ids, key)
        else:
            outputs = search(source_ids)
        ids, scores = outputs["ids"], outputs["scores"]
        if beam_size > 1:
            ids, scores = ids[:, 0], scores[:, 0]
        translations = self.target_tokenizer.detokenize(ids)
        translations = tf.where(empty, tf.constant(""), translations)
        return {"translations": translations, "scores": scores}

    def _bucketed_source(self, sentences):
        """Source ids padded to the XLA buckets (see `translate_xla`).

        Returns:
            dict: `"source_ids"` int32 `(chunks * chunk, length bucket)`
            (the rows after the batch's repeat its first sentence, so they
            end with it; an empty batch has one chunk of padding), `"chunk"` (the batch bucket, int32 scalar),
            `"max_steps"` (what `translate` would allow the batch) and
            `"empty"` (bool `(B,)`).
        """
        source_ids, empty = self._encode(sentences)
        batch, length = tf.shape(source_ids)[0], tf.shape(source_ids)[1]
        chunk = _bucket(batch, self.batch_buckets)
        # At least one chunk: an empty batch searches one row of padding.
        rows = tf.maximum((batch + chunk - 1) // chunk, 1) * chunk
        padding = _bucket(length, self.length_buckets) - length
        # One more row of padding, read only when the batch is empty.
        source_ids = tf.pad(
            source_ids, [[0, 1], [0, padding]], constant_values=self.model.pad_id
        )
        source_ids = tf.gather(source_ids, tf.range(rows) % tf.maximum(batch, 1))
        return {
            "source_ids": source_ids,
            "chunk": chunk,
            "max_steps": self._max_length(length),
            "empty": empty,
        }

    def _padded_search(self, source_ids, max_steps, beam_size):
        """The search on bucketed ids (compiled with XLA by `_XlaSearches`).

        Its buffers hold `length bucket + max_extra_length` tokens, but it
        stops after `max_steps`, so it gives `translate`'s ids.
        """
        buffer_length = self._max_length(tf.shape(source_ids)[1])
        if beam_size == 1:
            outputs = greedy_search(
                self.model, source_ids, buffer_length, max_steps=max_steps
            )
            return outputs["ids"], outputs["scores"]
        outputs = beam_search(
            self.model,
            source_ids,
            buffer_length,
            beam_size=beam_size,
            alpha=self.length_penalty,
            max_steps=max_steps,
        )
        return outputs["ids"][:, 0], outputs["scores"][:, 0]

    def _finish(self, ids, scores, empty):
        """Detokenized translations of the batch's rows of `ids`."""
        batch = tf.shape(empty)[0]
        translations = self.target_tokenizer.detokenize(ids[:batch])
        translations = tf.where(empty, tf.constant(""), translations)
        return {"translations": translations, "scores": scores[:batch]}

    def _translate_xla(self, sentences, search):
        """`translate_xla` in one graph: `search` is run on each chunk."""
        source = self._bucketed_source(sentences)
        ids = source["source_ids"]
        chunks = tf.reshape(ids, [-1, source["chunk"], tf.shape(ids)[1]])
        ids, scores = tf.map_fn(
            lambda chunk: search(chunk, source["max_steps"]),
            chunks,
            fn_output_signature=(
                tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.float32),
            ),
            parallel_iterations=1,
        )
        ids = tf.reshape(ids, [-1, tf.shape(ids)[-1]])
        return self._finish(ids, tf.reshape(scores, [-1]), source["empty"])

    def translate_fast(self, sentences, greedy=False):
        """Translates with the XLA-compiled search, in this process.

        The same computation as the `translate_xla` signature (or
        `translate_greedy_xla` with `greedy=True`), with the same outputs
        as `translate` (`translate_greedy`). The search is compiled once
        per (batch bucket, length bucket) it meets and kept;
        `xla_compilations` counts the compilations. A sampling translator
        samples with `translate` (not compiled with XLA) unless `greedy`.

        Args:
            sentences: list or 1-D tensor of strings.
            greedy: bool, greedy search instead of the translator's beam.

        Returns:
            dict with `"translations"` (tf.string `(B,)`) and `"scores"`
            (float32 `(B,)`).
        """
        sentences = tf.constant(sentences, tf.string)
        if self.sampling and not greedy:
            return self.translate(sentences)
        return self._xla.translate(sentences, 1 if greedy else self.beam_size)

    @property
    def xla_compilations(self):
        """How many times `translate_fast` compiled a search with XLA."""
        return self._xla.compilations()

    def xla_warmup_batches(self, word="one"):
        """Batches that make `translate_xla` compile each bucket.

        Args:
            word: str, repeated to make sentences of each length bucket.

        Returns:
            list of `(batch bucket, length bucket, sentences)`: `sentences`
            has the batch bucket's size, and its longest sentence falls in
            the length bucket (EOS included).
        """
        by_length = []
        repeats = 1
        for lower, upper in zip((0, *self.length_buckets), self.length_buckets):
            count = lower
            while count <= lower:
                sentence = " ".join([word] * repeats)
                count = int(self.count_source_tokens(tf.constant([sentence]))[0])
                repeats += 1
            by_length.append((upper, sentence))
        return [
            (batch, length, [sentence] * batch)
            for batch in self.batch_buckets
            for length, sentence in by_length
        ]

    def __call__(self, sentences):
        """Translates a list (or 1-D tensor) of strings; returns `list[str]`."""
        outputs = self.translate(tf.constant(sentences, tf.string))
        return [t.decode("utf-8") for t in outputs["translations"].numpy()]

    def signatures(self):
        """The SavedModel signatures: `serving_default` (`translate`),
        `translate_greedy`, and their XLA-compiled twins `translate_xla`
        (not for a sampling translator) and `translate_greedy_xla`."""
        signatures = {
            "serving_default": self.translate.get_concrete_function(),
            "translate_greedy": self.translate_greedy.get_concrete_function(),
            "translate_greedy_xla": self.translate_greedy_xla.get_concrete_function(),
        }
        if not self.sampling:
            signatures["translate_xla"] = self.translate_xla.get_concrete_function()
        return signatures


class _XlaSearches:
    """A translator's XLA-compiled searches, one per beam size.

    A plain object (not tracked by `tf.Module`): the SavedModel keeps the
    searches only through the signatures that call them. `graph[beam]` is
    called inside the signatures' graphs (shapes unknown when traced; XLA
    compiles each shape it runs); `translate` runs the in-process path,
    whose functions are traced (and compiled) once per padded shape, so
    their tracing counts are the compilations.
    """

    def __init__(self, translator):
        self.translator = translator
        beams = {1, translator.beam_size}
        self.graph = {beam: self._compiled(beam) for beam in beams}
        self.eager = {beam: self._compiled(beam) for beam in beams}
        signature = tf.TensorSpec([None], tf.string)
        self.bucketed_source = tf.function(
            translator._bucketed_source, input_signature=[signature], autograph=False
        )
        self.finish = tf.function(
            translator._finish,
            input_signature=[
                tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.bool),
            ],
            autograph=False,
        )

    def _compiled(self, beam_size):
        return tf.function(
            lambda source_ids, max_steps: self.translator._padded_search(
                source_ids, max_steps, beam_size
            ),
            jit_compile=True,
            autograph=False,
        )

    def translate(self, sentences, beam_size):
        source = self.bucketed_source(sentences)
        ids, chunk = source["source_ids"], int(source["chunk"])
        search = self.eager[beam_size]
        outputs = [
            search(ids[start : start + chunk], source["max_steps"])
            for start in range(0, int(ids.shape[0]), chunk)
        ]
        ids = tf.concat([ids for ids, _ in outputs], axis=0)
        scores = tf.concat([scores for _, scores in outputs], axis=0)
        return self.finish(ids, scores, source["empty"])

    def compilations(self):
        return sum(f.experimental_get_tracing_count() for f in self.eager.values())


def _bucket(size, buckets):
    """The smallest of `buckets` (increasing) holding `size`, else the last."""
    table = tf.constant(buckets, tf.int32)
    index = tf.reduce_sum(tf.cast(table < size, tf.int32))
    return table[tf.minimum(index, len(buckets) - 1)]


def _check_buckets(name, buckets):
    """`buckets` as an increasing tuple of positive ints; else `ValueError`."""
    try:
        values = tuple(buckets)
    except TypeError:
        values = ()
    if not values or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0
        for v in values
    ):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers. "
            f"Received: {buckets!r}"
        )
    return tuple(sorted({int(v) for v in values}))


def _length_buckets(length_buckets, max_input_tokens):
    """The source length buckets: the given ones below `max_input_tokens`
    (default: `default_length_buckets`), then `max_input_tokens`."""
    if length_buckets is None:
        return default_length_buckets(max_input_tokens)
    buckets = _check_buckets("length_buckets", length_buckets)
    return (*(b for b in buckets if b < max_input_tokens), max_input_tokens)


def _check_sampling(model, beam_size, sampling, temperature, top_k, top_p, seed):
    """The validated `(temperature, top_k, top_p, seed)` of a `Translator`.

    Without sampling: the defaults `(1.0, None, None, 0)`. With it and
    `seed=None`, a seed drawn from NumPy's global generator.
    """
    sampled = check_sampling_settings(
        model.output_vocabulary_size,
        beam_size,
        sampling,
        temperature,
        top_k,
        top_p,
        seed,
    )
    if sampled is None:
        return 1.0, None, None, 0
    temperature, top_k, top_p, seed = sampled
    return temperature, top_k, top_p, int(seed_key(seed)[0])
