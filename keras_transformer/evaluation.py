"""Evaluation of a trained translator.

- `evaluate_translator`, `score_translations`, `translate_all`: corpus-level
  sacreBLEU, chrF and exact match of its translations;
  `format_scores`, `write_scores_json`, `write_lines`: the report on screen
  and in files.
- `score_pairs`: the log-probability of given translations under the model
  (forced decoding), to filter noisy corpora or rerank.
"""

import importlib.metadata
import os

import numpy as np
import sacrebleu
import tensorflow as tf

from keras_transformer import model_directory
from keras_transformer.data.pipeline import teacher_forcing_ids
from keras_transformer.utils import check_positive_int

# The keys of `score_translations`'s dict, in the order they are reported.
SCORE_KEYS = (
    "count",
    "exact_match",
    "bleu",
    "bleu_signature",
    "chrf",
    "chrf_signature",
)


def translate_all(translator, sentences, batch_size=64, xla=True):
    """Translates a list of strings in batches; returns a list of strings.

    With `xla=True` and a `keras_transformer.export.Translator`, each batch
    goes through `translator.translate_fast` (the search compiled with XLA
    once per batch and source length bucket; the same translations as
    `translate`); otherwise, and for other translators (e.g. a loaded
    SavedModel), through `translator.translate`.

    Args:
        translator: an object with a `translate(tf.string (B,)) -> dict`
            function (`"translations"`), e.g. a `Translator`.
        sentences: list of strings.
        batch_size: positive int, sentences per call.
        xla: bool, use `translate_fast` when the translator has it.

    Returns:
        list of str, one translation per sentence.
    """
    check_positive_int("batch_size", batch_size)
    translate = translator.translate
    if xla and hasattr(translator, "translate_fast"):
        translate = translator.translate_fast
    translations = []
    for start in range(0, len(sentences), batch_size):
        batch = tf.constant(sentences[start : start + batch_size], tf.string)
        outputs = translate(batch)
        translations += [t.decode("utf-8") for t in outputs["translations"].numpy()]
    return translations


def score_translations(hypotheses, references, bleu_tokenize="13a"):
    """sacreBLEU (on detokenized text), chrF and exact match.

    Args:
        hypotheses: list of translated strings.
        references: list of reference strings, same length.
        bleu_tokenize: sacreBLEU tokenizer, `"13a"` (the WMT standard) or
            e.g. `"char"` where references are single words (as the demo's
            German number compounds, for which word 4-gram BLEU is 0 by
            construction).

    Returns:
        dict with `bleu`, `bleu_signature`, `chrf`, `chrf_signature`,
        `exact_match` (fraction of hypotheses equal to their reference after
        stripping surrounding whitespace) and `count`.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses for {len(references)} references."
        )
    bleu = sacrebleu.metrics.BLEU(tokenize=bleu_tokenize)
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return {
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        "exact_match": exact / max(len(references), 1),
        "count": len(references),
    }


def evaluate_translator(
    model,
    source_tokenizer,
    target_tokenizer,
    pairs,
    beam_size=4,
    length_penalty=0.6,
    batch_size=64,
    bleu_tokenize="13a",
):
    """Translates the sources of `pairs` and scores them against the targets.

    The translations are a `keras_transformer.export.Translator`'s,
    searched with XLA on bucketed shapes (`Translator.translate_fast`: the
    same translations as the exported `serving_default`, compiled once per
    batch and source length bucket met).

    Args:
        model: a trained `Transformer`.
        source_tokenizer, target_tokenizer: its `SubwordTokenizer`s.
        pairs: list of `(source, target)` strings (or bytes).
        beam_size: int, 1 for greedy.
        length_penalty: float.
        batch_size: int.
        bleu_tokenize: see `score_translations`.

    Returns:
        `score_translations`'s dict, plus `hypotheses` (the translations, in
        the order of `pairs`) and `examples` (the first five `(source,
        reference, hypothesis)` triples).
    """
    from keras_transformer.export import Translator

    translator = Translator(
        model,
        source_tokenizer,
        target_tokenizer,
        beam_size=beam_size,
        length_penalty=length_penalty,
    )
    return evaluate_translations(
        lambda sources: translate_all(translator, sources, batch_size),
        pairs,
        bleu_tokenize=bleu_tokenize,
    )


def evaluate_translations(translate, pairs, bleu_tokenize="13a"):
    """Scores the translations `translate` gives of the sources of `pairs`.

    Args:
        translate: a function `list[str] -> list[str]` (e.g. a
            `CTranslate2Translator`'s `translate`).
        pairs: list of `(source, target)` strings (or bytes).
        bleu_tokenize: see `score_translations`.

    Returns:
        As `evaluate_translator`.

    Example:

    >>> upper = lambda sentences: [s.upper() for s in sentences]
    >>> scores = evaluate_translations(upper, [("ab", "AB"), ("c", "d")])
    >>> scores["exact_match"], scores["hypotheses"]
    (0.5, ['AB', 'C'])
    """
    from keras_transformer.data import as_corpus

    pairs = list(as_corpus(pairs))  # `str` pairs, UTF-8 checked
    sources = [s for s, _ in pairs]
    references = [t for _, t in pairs]
    hypotheses = list(translate(sources))
    scores = score_translations(hypotheses, references, bleu_tokenize)
    scores["hypotheses"] = hypotheses
    scores["examples"] = list(zip(sources, references, hypotheses))[:5]
    return scores


def format_scores(scores, title="Test set"):
    """A short human-readable report of `score_translations`'s dict."""
    lines = [
        f"{title}: {scores['count']} sentences",
        f"  exact match  {scores['exact_match']:.4f}",
        f"  BLEU         {scores['bleu']:.2f}   ({scores['bleu_signature']})",
        f"  chrF         {scores['chrf']:.2f}   ({scores['chrf_signature']})",
    ]
    for source, reference, hypothesis in scores.get("examples", []):
        lines.append(f"  {source!r} -> {hypothesis!r} (reference {reference!r})")
    return "\n".join(lines)


def write_scores_json(path, scores, settings=None):
    """Writes `score_translations`'s scores as a JSON file (atomically).

    The file holds `count`, `exact_match`, `bleu` and `chrf` with their
    sacreBLEU signatures (`bleu_signature`, `chrf_signature`: tokenizer,
    smoothing, sacreBLEU version), the other scalar entries of `scores`
    (e.g. `wall_seconds`), `examples` as a list of `{"source",
    "reference", "hypothesis"}` objects when present, the
    `keras_transformer_version`, and `settings` (what produced the
    translations: model, test set, beam size, ...). The hypotheses
    themselves are left out; `write_lines` writes them.

    Args:
        path: str or path-like, the JSON file to write.
        scores: dict from `score_translations` or `evaluate_translator`.
        settings: optional JSON-serializable dict, written under
            `"settings"`. Defaults to `None` (an empty dict).

    Returns:
        The dict written.

    Raises:
        ValueError: if `scores` lacks one of `SCORE_KEYS`.

    Example:

    ```python
    import json
    from keras_transformer.evaluation import score_translations, write_scores_json

    scores = score_translations(["eins", "zwo"], ["eins", "zwei"])
    write_scores_json("scores.json", scores, {"beam_size": 4, "test": "demo"})
    print(json.load(open("scores.json"))["exact_match"])  # 0.5
    ```
    """
    missing = [key for key in SCORE_KEYS if key not in scores]
    if missing:
        raise ValueError(
            f"`scores` must hold {list(SCORE_KEYS)}, as `score_translations` "
            f"returns. Missing: {missing}"
        )
    report = {
        key: value
        for key, value in scores.items()
        if isinstance(value, str | int | float | bool) or value is None
    }
    if "examples" in scores:
        report["examples"] = [
            {"source": source, "reference": reference, "hypothesis": hypothesis}
            for source, reference, hypothesis in scores["examples"]
        ]
    report["keras_transformer_version"] = _package_version()
    report["settings"] = dict(settings or {})
    model_directory.write_json(os.fspath(path), report)
    return report


def _package_version():
    """The installed keras-transformer version, or `None` when not installed."""
    try:
        return importlib.metadata.version("keras-transformer")
    except importlib.metadata.PackageNotFoundError:
        return None


def write_lines(path, lines):
    """Writes strings one per line (UTF-8, `\\n` ends), atomically.

    A line break inside a string would shift every later line, so `\\r`
    and `\\n` inside a string are written as spaces.

    Args:
        path: str or path-like.
        lines: iterable of strings (e.g. `evaluate_translator(...)
            ["hypotheses"]`).
    """
    path = os.fspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8", newline="\n") as file:
        for line in lines:
            file.write(_one_line(line) + "\n")
    os.replace(temporary, path)


def _one_line(text):
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def score_pairs(model, source_tokenizer, target_tokenizer, pairs, batch_size=64):
    """The log-probability of each target given its source (forced decoding).

    Each pair is tokenized as training does it: source ids + EOS into the
    encoder, BOS + target ids into the decoder, and the log-probability of
    target ids + EOS under the model (teacher forcing, no dropout) summed
    over those tokens: `log p(target | source)`, the quantity fairseq's
    `--score-reference` and OpenNMT's `score` report. The normalized score
    divides it by the number of scored tokens (target tokens + 1 for EOS).
    No pair is truncated: a truncated pair's score would not be its score.

    Pairs are sorted by length and batched with padding; padding does not
    change a score (the encoder and decoder masks exclude padded positions,
    and padded positions are not summed).

    Args:
        model: a trained `Transformer` (or a model with the same call:
            `{"source", "target"}` ids -> logits `(B, T, V)`, and `pad_id`,
            `bos_id`, `eos_id` attributes).
        source_tokenizer, target_tokenizer: its `SubwordTokenizer`s.
        pairs: list of `(source, target)` strings (or bytes, UTF-8).
        batch_size: int, pairs per model call.

    Returns:
        A dict of numpy arrays of shape `(len(pairs),)`, in the order of
        `pairs`: `log_prob` (float64, the sum), `normalized` (float64,
        `log_prob / tokens`) and `tokens` (int64, target tokens + EOS).

    Raises:
        ValueError: if `batch_size` is not a positive integer, or a pair is
            longer than a model with learned positions can take
            (`max_positions`, EOS or BOS included).

    Example:

    ```python
    from keras_transformer import Transformer
    from keras_transformer.data import demo_pairs
    from keras_transformer.evaluation import score_pairs
    from keras_transformer.text import SubwordTokenizer, train_sentencepiece

    pairs = demo_pairs("valid")
    tokenizer = SubwordTokenizer(
        train_sentencepiece([text for pair in pairs for text in pair], 60)
    )
    model = Transformer(vocabulary_size=tokenizer.vocab_size, num_layers=1,
                        d_model=16, num_heads=2, d_ff=32)
    scores = score_pairs(model, tokenizer, tokenizer, [("one", "eins")])
    print(scores["log_prob"], scores["normalized"], scores["tokens"])
    ```
    """
    from keras_transformer.data import as_corpus

    check_positive_int("batch_size", batch_size)
    pairs = list(as_corpus(pairs))  # `str` pairs, UTF-8 checked
    sources = _token_rows(source_tokenizer, [s for s, _ in pairs])
    targets = _token_rows(target_tokenizer, [t for _, t in pairs])
    _check_positions(model, sources, targets)
    tokens = np.array([len(ids) + 1 for ids in targets], np.int64)
    log_prob = np.zeros(len(pairs), np.float64)
    forced = _forced_log_prob_function(model)
    order = np.argsort(
        [max(len(s), len(t)) for s, t in zip(sources, targets)], kind="stable"
    )
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        # The special tokens as training adds them: source + EOS, BOS +
        # target (decoder input), target + EOS (labels).
        ids = teacher_forcing_ids(
            tf.ragged.constant([sources[i] for i in rows], tf.int32, ragged_rank=1),
            tf.ragged.constant([targets[i] for i in rows], tf.int32, ragged_rank=1),
        )
        source, target_in, target_out = (x.to_tensor(model.pad_id) for x in ids)
        log_prob[rows] = forced(source, target_in, target_out).numpy()
    return {"log_prob": log_prob, "normalized": log_prob / tokens, "tokens": tokens}


def _token_rows(tokenizer, texts, chunk=1024):
    """Subword ids of `texts` (no BOS/EOS), as lists of Python ints."""
    rows = []
    for start in range(0, len(texts), chunk):
        ids = tokenizer.tokenize(tf.constant(texts[start : start + chunk], tf.string))
        rows += [[int(i) for i in row] for row in ids.to_list()]
    return rows


def _check_positions(model, sources, targets):
    """Refuses pairs longer than a learned position table."""
    if getattr(model, "position_encoding", None) != "learned":
        return
    limit = model.max_positions
    for index, (source, target) in enumerate(zip(sources, targets)):
        length = max(len(source), len(target)) + 1
        if length > limit:
            raise ValueError(
                f"Pair {index} is {length} tokens long (EOS or BOS included); "
                f"the model's learned positions stop at max_positions={limit}."
            )


def _forced_log_prob_function(model):
    """A `tf.function`: padded ids -> float32 `(B,)` sums of log p(target_out)."""

    ids = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[ids, ids, ids])  # one trace for all shapes
    def forced(source, target_in, target_out):
        logits = model({"source": source, "target": target_in}, training=False)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        picked = tf.gather(log_probs, target_out, batch_dims=2)  # (B, T)
        scored = tf.not_equal(target_out, model.pad_id)
        return tf.reduce_sum(tf.where(scored, picked, 0.0), axis=1)

    return forced
