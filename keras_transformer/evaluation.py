"""Corpus-level evaluation of a translator: sacreBLEU, chrF, exact match."""

import sacrebleu
import tensorflow as tf


def translate_all(translator, sentences, batch_size=64):
    """Translates a list of strings in batches; returns a list of strings."""
    translations = []
    for start in range(0, len(sentences), batch_size):
        batch = tf.constant(sentences[start : start + batch_size], tf.string)
        outputs = translator.translate(batch)
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

    Args:
        model: a trained `Transformer`.
        source_tokenizer, target_tokenizer: its `SubwordTokenizer`s.
        pairs: list of `(source, target)` strings (or bytes).
        beam_size: int, 1 for greedy.
        length_penalty: float.
        batch_size: int.
        bleu_tokenize: see `score_translations`.

    Returns:
        `score_translations`'s dict, plus `examples`: the first five
        `(source, reference, hypothesis)` triples.
    """
    from keras_transformer.data import as_corpus
    from keras_transformer.export import Translator

    pairs = list(as_corpus(pairs))  # `str` pairs, UTF-8 checked
    sources = [s for s, _ in pairs]
    references = [t for _, t in pairs]
    translator = Translator(
        model,
        source_tokenizer,
        target_tokenizer,
        beam_size=beam_size,
        length_penalty=length_penalty,
    )
    hypotheses = translate_all(translator, sources, batch_size)
    scores = score_translations(hypotheses, references, bleu_tokenize)
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
