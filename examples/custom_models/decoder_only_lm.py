"""A decoder-only (GPT-style) language model from the Transformer's decoder.

    token ids -> TokenEmbedding (scaled) -> Decoder without encoder-decoder
              attention (masked self-attention + FFN blocks, positions added)
              -> TokenEmbedding.logits (the tied embedding matrix, transposed)

It learns to count in English words ("twenty one , twenty two , ...") and
generates greedily (or samples, with a temperature, top-k and top-p, from
`keras_transformer.decoding.sampling`) with the decoder's fixed-size
key/value cache:
`decoder.init_cache(batch_size, max_length)` once (per block, separate
heads-major key and value buffers `(batch_size, heads, max_length, key_dim)`),
then one position at a time with `cache=` and `cache_index=`. Nothing grows,
so the loop compiles with XLA, which writes each new position into the
buffers in place. `generate_without_cache` recomputes the whole prefix at
every step;
both give the same tokens (and logits up to float rounding).

`DecoderOnlyLM` is a registered serializable `keras.Model`, so the saved
`.keras` file loads with `keras.saving.load_model` (safe mode) once this
module is imported.

Run:

    python examples/custom_models/decoder_only_lm.py --output-dir runs/lm
    # also print a sampled continuation:
    python examples/custom_models/decoder_only_lm.py --output-dir runs/lm \
        --sampling --temperature 0.8 --top-k 5
"""

import argparse
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_transformer.decoding.generation import check_sampling_settings
from keras_transformer.decoding.generation import resolve_cache_dtype
from keras_transformer.decoding.sampling import sampling_next_token
from keras_transformer.decoding.sampling import seed_key
from keras_transformer.layers import Decoder
from keras_transformer.layers import TokenEmbedding
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import BOS_PIECE
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import EOS_PIECE
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.special_tokens import PAD_PIECE
from keras_transformer.special_tokens import UNK_ID
from keras_transformer.special_tokens import UNK_PIECE

PACKAGE = "keras_transformer_examples"
MODEL_FILE = "decoder_only_lm.keras"

# ---------------------------------------------------------------------------
# Data: counting in words, with a word-level vocabulary.
# ---------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve "
    "thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
SEPARATOR = ","


def number_words(number):
    """`0 <= number < 1000` in English words, e.g. 342 -> "three hundred forty two"."""
    if not 0 <= number < 1000:
        raise ValueError(f"Expected 0 <= number < 1000. Received: {number}")
    words = []
    hundreds, rest = divmod(number, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens - 2])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return " ".join(words)


def counting_text(start, count):
    """`count` consecutive numbers from `start`: "seven , eight , nine"."""
    return f" {SEPARATOR} ".join(number_words(n) for n in range(start, start + count))


# Special pieces at the package's ids, then every word the corpus can use.
VOCABULARY = (
    PAD_PIECE,
    UNK_PIECE,
    BOS_PIECE,
    EOS_PIECE,
    SEPARATOR,
    "hundred",
    *_ONES,
    *_TENS,
)
_WORD_IDS = {word: index for index, word in enumerate(VOCABULARY)}
if [_WORD_IDS[p] for p in (PAD_PIECE, UNK_PIECE, BOS_PIECE, EOS_PIECE)] != [
    PAD_ID,
    UNK_ID,
    BOS_ID,
    EOS_ID,
]:  # pragma: no cover - guards edits of VOCABULARY
    raise ImportError("VOCABULARY must start with the package's special pieces.")


def encode(text, add_bos=True, add_eos=False):
    """Words -> ids (unknown words -> `UNK_ID`)."""
    ids = [_WORD_IDS.get(word, UNK_ID) for word in text.split()]
    return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])


def decode(ids):
    """Ids -> words, stopping at EOS and dropping padding and BOS."""
    words = []
    for index in np.asarray(ids).reshape(-1).tolist():
        if index == EOS_ID:
            break
        if index not in (PAD_ID, BOS_ID):
            words.append(VOCABULARY[index] if 0 <= index < len(VOCABULARY) else "?")
    return " ".join(words)


def make_corpus(num_sequences, max_count=6, max_start=999, seed=0):
    """Random counting sequences as text."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(num_sequences):
        count = int(rng.integers(2, max_count + 1))
        start = int(rng.integers(0, max_start - count + 2))
        texts.append(counting_text(start, count))
    return texts


def make_dataset(texts, batch_size, length, repeat=False, seed=0):
    """Next-token pairs: inputs `BOS w1 .. wn`, targets `w1 .. wn EOS`.

    Sequences are padded (or cut) to `length + 1` ids, so every batch has
    the static shape `(batch_size, length)`; the loss ignores padding.
    """
    ids = np.zeros((len(texts), length + 1), dtype=np.int32)
    for row, text in enumerate(texts):
        sequence = encode(text, add_bos=True, add_eos=True)[: length + 1]
        ids[row, : len(sequence)] = sequence
    dataset = tf.data.Dataset.from_tensor_slices((ids[:, :-1], ids[:, 1:]))
    dataset = dataset.shuffle(len(texts), seed=seed)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=repeat).prefetch(2)


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecoderOnlyLM(keras.Model):
    """A decoder-only Transformer language model.

    `logits = model(ids)`: int ids `(batch_size, length)` (BOS first,
    padded with `pad_id`) to float32 next-token logits
    `(batch_size, length, vocabulary_size)`.

    Args:
        vocabulary_size: int.
        num_layers: int, decoder blocks.
        d_model: int. num_heads: int. d_ff: int.
        dropout: float, residual, embedding and attention dropout.
        normalize_first: bool, pre-LN blocks and a final LayerNorm (the
            GPT-2 arrangement, the default here).
        max_wavelength: float, of the sinusoidal positions.
        pad_id: int. eos_id: int.
        **kwargs: `keras.Model` keyword arguments (`name`, `dtype`).
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers=2,
        d_model=64,
        num_heads=4,
        d_ff=256,
        dropout=0.1,
        normalize_first=True,
        max_wavelength=10000,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.normalize_first = normalize_first
        self.max_wavelength = max_wavelength
        self.pad_id = pad_id
        self.eos_id = eos_id
        # One matrix embeds the inputs and (transposed) projects to logits.
        self.embedding = TokenEmbedding(
            vocabulary_size,
            d_model,
            tie_weights=True,
            pad_id=pad_id,
            dtype=self.dtype_policy,
            name="embedding",
        )
        # No `vocabulary_size`: the decoder takes embedded inputs. Built
        # without an encoder shape, its blocks have no cross-attention.
        self.decoder = Decoder(
            num_layers,
            num_heads,
            d_ff,
            d_model=d_model,
            dropout=dropout,
            normalize_first=normalize_first,
            max_wavelength=max_wavelength,
            pad_id=pad_id,
            dtype=self.dtype_policy,
            name="decoder",
        )

    def build(self, inputs_shape=None):
        self.embedding.build((None, None))
        self.decoder.build((None, None, self.d_model))  # no encoder shape
        self.built = True

    def call(self, token_ids, training=None):
        x = self.embedding(token_ids)  # (B, T, d_model), scaled
        x = self.decoder(
            x, padding_mask=ops.not_equal(token_ids, self.pad_id), training=training
        )
        return self.embedding.logits(x)  # (B, T, V), float32

    def _step(self, token_ids, cache, cache_index):
        """Runs new positions through the cached decoder: `(logits, cache)`."""
        x = self.embedding(token_ids)
        x, cache = self.decoder(x, cache=cache, cache_index=cache_index, training=False)
        return self.embedding.logits(x), cache

    def _cached_search(
        self, prompt_ids, max_new_tokens, cache_dtype=None, sampling=None, key=None
    ):
        """Greedy search (or sampling) with the fixed-size cache, one while loop.

        `cache_dtype`: of the key/value buffers; `None` for the compute dtype.
        `sampling`: `None` (greedy) or `(temperature, top_k, top_p)`: each
        token is drawn by the library's sampling step
        (`keras_transformer.decoding.sampling.sampling_next_token`; PAD and
        BOS never drawn) with the int64 `(2,)` `key`.
        """
        if sampling is None:
            pick = lambda logits, step: ops.cast(ops.argmax(logits, axis=-1), "int32")
        else:
            banned = (self.pad_id, BOS_ID)
            pick = sampling_next_token(*sampling, banned_ids=banned, key=key)
        batch_size, prompt_length = ops.shape(prompt_ids)[0], prompt_ids.shape[1]
        max_length = prompt_length + max_new_tokens
        cache = self.decoder.init_cache(batch_size, max_length, dtype=cache_dtype)
        # Prefill: the whole prompt in one call, written at positions 0..P-1.
        logits, cache = self._step(prompt_ids, cache, 0)
        last_logits = logits[:, -1]  # (B, V)
        tokens = ops.full((batch_size, max_new_tokens), self.pad_id, "int32")
        all_logits = ops.zeros(
            (batch_size, max_new_tokens, self.vocabulary_size), "float32"
        )
        finished = ops.zeros((batch_size,), "bool")
        positions = ops.arange(max_new_tokens, dtype="int32")

        def body(step, tokens, all_logits, last_logits, finished, cache):
            next_ids = ops.where(finished, self.pad_id, pick(last_logits, step))
            written = ops.equal(positions, step)  # (N,)
            tokens = ops.where(written[None, :], next_ids[:, None], tokens)
            all_logits = ops.where(
                written[None, :, None], last_logits[:, None, :], all_logits
            )
            finished = ops.logical_or(finished, ops.equal(next_ids, self.eos_id))
            # Feed the new token at its position; the cache holds the rest.
            logits, cache = self._step(next_ids[:, None], cache, prompt_length + step)
            return step + 1, tokens, all_logits, logits[:, 0], finished, cache

        def cond(step, tokens, all_logits, last_logits, finished, cache):
            return ops.logical_and(
                step < max_new_tokens, ops.logical_not(ops.all(finished))
            )

        _, tokens, all_logits, _, _, _ = ops.while_loop(
            cond,
            body,
            (ops.zeros((), "int32"), tokens, all_logits, last_logits, finished, cache),
            maximum_iterations=max_new_tokens,
        )
        return tokens, all_logits

    def generate(
        self,
        prompt_ids,
        max_new_tokens=20,
        jit_compile=True,
        return_logits=False,
        sampling=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
    ):
        """Greedy (or sampled) continuation of prompts, with the fixed-size cache.

        Args:
            prompt_ids: int `(batch_size, prompt_length)`, BOS first, no
                padding (all prompts of one batch have the same length).
            max_new_tokens: int, tokens to generate; rows that produce EOS
                are padded with `pad_id` after it.
            jit_compile: bool, compile the search loop with XLA (one
                compilation per prompt shape). The key/value caches get the
                library's dtype for the search
                (`keras_transformer.decoding.generation.resolve_cache_dtype`):
                float32 for a 16-bit model compiled on a CPU.
            return_logits: bool, also return the float32 logits each token
                was chosen from, `(batch_size, max_new_tokens, vocabulary)`
                (zeros after the search stopped; unfiltered when sampling).
            sampling: bool, draw each token instead of taking the argmax.
            temperature, top_k, top_p, seed: the sampling settings, as in
                `keras_transformer.decoding.generate` (the same seed gives
                the same tokens, with and without XLA).

        Returns:
            int32 numpy `(batch_size, max_new_tokens)`, and the logits if
            asked.
        """
        prompt_ids = _check_prompt(prompt_ids, self.pad_id)
        sampled = check_sampling_settings(
            self.vocabulary_size, 1, sampling, temperature, top_k, top_p, seed
        )
        if not self.built:
            self.build()
        settings = None if sampled is None else sampled[:3]
        key = (prompt_ids.shape, int(max_new_tokens), bool(jit_compile), settings)
        # A plain dict in __dict__, so Keras does not track it.
        functions = self.__dict__.setdefault("_generate_functions", {})
        if key not in functions:
            cache_dtype = resolve_cache_dtype(self, jit_compile)
            functions[key] = tf.function(
                lambda ids, seed_key: self._cached_search(
                    ids, key[1], cache_dtype, settings, seed_key
                ),
                jit_compile=jit_compile,
                autograph=False,
            )
        seed = np.zeros(2, np.int64) if sampled is None else seed_key(sampled[3])
        tokens, logits = functions[key](
            tf.constant(prompt_ids, tf.int32), tf.constant(seed)
        )
        tokens = np.asarray(tokens)
        return (tokens, np.asarray(logits)) if return_logits else tokens

    def generate_without_cache(
        self, prompt_ids, max_new_tokens=20, return_logits=False
    ):
        """The reference: reruns the model on the whole prefix at every step.

        Same arguments and results as `generate` (eager, no cache); the
        logits rows of steps after every row finished are zeros.
        """
        prompt_ids = _check_prompt(prompt_ids, self.pad_id)
        batch_size = prompt_ids.shape[0]
        prefix = prompt_ids
        tokens = np.full((batch_size, max_new_tokens), self.pad_id, np.int32)
        logits = np.zeros(
            (batch_size, max_new_tokens, self.vocabulary_size), np.float32
        )
        finished = np.zeros(batch_size, bool)
        for step in range(max_new_tokens):
            step_logits = np.asarray(self(prefix, training=False))[:, -1]
            next_ids = np.where(finished, self.pad_id, step_logits.argmax(-1))
            tokens[:, step], logits[:, step] = next_ids, step_logits
            finished |= next_ids == self.eos_id
            if finished.all():
                break
            prefix = np.concatenate([prefix, next_ids[:, None].astype(np.int32)], 1)
        return (tokens, logits) if return_logits else tokens

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "dropout": self.dropout,
                "normalize_first": self.normalize_first,
                "max_wavelength": self.max_wavelength,
                "pad_id": self.pad_id,
                "eos_id": self.eos_id,
            }
        )
        return config


def _check_prompt(prompt_ids, pad_id):
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim == 1:
        prompt_ids = prompt_ids[None]
    if (
        prompt_ids.ndim != 2
        or prompt_ids.shape[1] < 1
        or not np.issubdtype(prompt_ids.dtype, np.integer)
    ):
        raise ValueError(
            "`prompt_ids` must be int ids of shape (batch_size, prompt_length). "
            f"Received: shape={prompt_ids.shape}, dtype={prompt_ids.dtype}"
        )
    if (prompt_ids == pad_id).any():
        raise ValueError("Prompts must not contain padding; batch equal lengths.")
    return prompt_ids.astype(np.int32)


def continue_text(model, text, max_new_tokens=20, **kwargs):
    """Continuation of a text prompt, as words (`kwargs`: of `generate`)."""
    ids = model.generate([encode(text)], max_new_tokens, **kwargs)
    return decode(ids[0])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/decoder_only_lm")
    parser.add_argument("--num-sequences", type=int, default=20_000)
    parser.add_argument("--sequence-length", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="Training batches per epoch (default: one pass over the corpus).",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="twenty one , twenty two ,")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--no-jit-compile", action="store_true", help="Train and generate without XLA."
    )
    parser.add_argument(
        "--sampling",
        action="store_true",
        help="Also print a sampled continuation (drawn with --seed).",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None):
    """Trains the model, checks cached against uncached generation, saves it.

    Returns:
        dict with `"model"`, `"history"`, `"prompt"`, `"generated"` (words),
        `"generated_ids"`, `"sampled"` (words with `--sampling`, else
        `None`) and `"model_path"`.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keras.utils.set_random_seed(args.seed)
    texts = make_corpus(args.num_sequences, seed=args.seed)
    repeat = args.steps_per_epoch is not None
    dataset = make_dataset(
        texts, args.batch_size, args.sequence_length, repeat=repeat, seed=args.seed
    )
    model = DecoderOnlyLM(
        len(VOCABULARY),
        num_layers=args.num_layers,
        d_model=args.d_model,
        num_heads=args.num_heads,
        d_ff=args.d_ff,
        dropout=args.dropout,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=PAD_ID
        ),
        jit_compile=not args.no_jit_compile,
    )
    history = model.fit(
        dataset,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        shuffle=False,  # the dataset shuffles itself
        verbose=args.verbose,
    )

    prompt = [encode(args.prompt)]
    jit = not args.no_jit_compile
    ids = model.generate(prompt, args.max_new_tokens, jit_compile=jit)
    reference = model.generate_without_cache(prompt, args.max_new_tokens)
    if not np.array_equal(ids, reference):
        raise RuntimeError(f"Cached generation {ids} != recomputed {reference}.")
    generated = decode(ids[0])
    print(f"{args.prompt!r} -> {generated!r} (cached == recomputed)")
    sampled = None
    if args.sampling:
        sampled = continue_text(
            model,
            args.prompt,
            args.max_new_tokens,
            jit_compile=jit,
            sampling=True,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
        print(f"{args.prompt!r} -> {sampled!r} (sampled)")

    os.makedirs(args.output_dir, exist_ok=True)
    model_path = os.path.join(args.output_dir, MODEL_FILE)
    model.save(model_path)
    print(f"saved {model_path}")
    return {
        "model": model,
        "history": history.history,
        "prompt": args.prompt,
        "generated": generated,
        "generated_ids": ids,
        "sampled": sampled,
        "model_path": model_path,
    }


if __name__ == "__main__":
    main()
