"""A self-contained translator: strings in, strings out, servable by TF Serving."""

import tensorflow as tf

from keras_transformer.decoding.generation import EXTRA_LENGTH
from keras_transformer.decoding.generation import check_sampling_settings
from keras_transformer.decoding.generation import search_function
from keras_transformer.decoding.sampling import seed_key
from keras_transformer.text.subword_tokenizer import sanitize_utf8


class Translator(tf.Module):
    """Tokenize -> generate -> detokenize, all inside one TensorFlow graph.

    The translator holds the model's variables and the SentencePiece models,
    so a SavedModel of it needs nothing but `tensorflow` and
    `tensorflow_text` to run (and stock TF Serving, which links the
    tensorflow-text kernels, can serve it). The search is traced without
    XLA, so its key/value cache writes are gather + select of core ops (no
    `XlaDynamicUpdateSlice`; see `layers.utils.dynamic_update`).

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

    Besides the two signatures, a SavedModel of the translator keeps two
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

    Example:

    ```python
    translator = Translator(model, tokenizer, tokenizer, beam_size=4)
    translator.translate(tf.constant(["four hundred"]))["translations"]
    translator.save("export/1")
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

    def _translate(self, sentences, beam_size, sampling=False):
        source_ids, empty = self._encode(sentences)
        max_length = tf.shape(source_ids)[1] + self.max_extra_length
        if self.model.position_encoding == "learned":
            max_length = tf.minimum(max_length, self.model.max_positions)
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

    def __call__(self, sentences):
        """Translates a list (or 1-D tensor) of strings; returns `list[str]`."""
        outputs = self.translate(tf.constant(sentences, tf.string))
        return [t.decode("utf-8") for t in outputs["translations"].numpy()]

    def signatures(self):
        """The SavedModel signatures: `serving_default` (`translate`) and
        `translate_greedy`."""
        return {
            "serving_default": self.translate.get_concrete_function(),
            "translate_greedy": self.translate_greedy.get_concrete_function(),
        }


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
