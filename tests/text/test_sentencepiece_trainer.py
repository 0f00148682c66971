import subprocess
import sys

import pytest
import sentencepiece as spm

from keras_transformer import special_tokens
from keras_transformer.text import train_sentencepiece
from keras_transformer.text.sentencepiece_trainer import _reservoir_sample
from keras_transformer.text.sentencepiece_trainer import _training_sentences


def _pieces(proto):
    processor = spm.SentencePieceProcessor(model_proto=proto)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize("vocab_size", [64, 500])
def test_trains_on_small_corpus_with_special_ids(
    english_sentences, model_type, vocab_size
):
    proto = train_sentencepiece(english_sentences, vocab_size, model_type=model_type)
    pieces = _pieces(proto)
    assert pieces[:4] == [
        special_tokens.PAD_PIECE,
        special_tokens.UNK_PIECE,
        special_tokens.BOS_PIECE,
        special_tokens.EOS_PIECE,
    ]
    # `vocab_size` is an upper bound: the corpus cannot fill 500 pieces.
    assert 4 < len(pieces) <= vocab_size
    if model_type == "bpe" and vocab_size == 64:
        assert len(pieces) == 64


def test_deterministic(english_sentences):
    first = train_sentencepiece(english_sentences, 100)
    assert train_sentencepiece(iter(english_sentences), 100) == first
    sampled = train_sentencepiece(english_sentences, 100, input_sentence_size=100)
    again = train_sentencepiece(english_sentences, 100, input_sentence_size=100)
    assert sampled == again


def test_deterministic_across_processes(english_sentences):
    # SentencePiece's own sampling differs between processes; ours must not.
    kwargs = "vocab_size=100, input_sentence_size=100, seed=7"
    script = (
        "import sys, random\n"
        "from num2words import num2words\n"
        "from keras_transformer.text.sentencepiece_trainer import "
        "train_sentencepiece\n"
        "rng = random.Random(0)\n"
        "sentences = [num2words(rng.randint(0, 10**6)) for _ in range(300)]\n"
        f"sys.stdout.buffer.write(train_sentencepiece(sentences, {kwargs}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, timeout=120
    )
    local = train_sentencepiece(
        english_sentences, vocab_size=100, input_sentence_size=100, seed=7
    )
    assert result.stdout == local


def test_reservoir_sample():
    items = list(range(1000))
    sample = _reservoir_sample(iter(items), 10, seed=3)
    assert len(sample) == 10 and len(set(sample)) == 10
    assert _reservoir_sample(iter(items), 10, seed=3) == sample
    assert _reservoir_sample(iter(items), 10, seed=4) != sample
    assert _reservoir_sample(iter(items[:5]), 10, seed=3) == items[:5]


def test_skips_empty_lines_and_accepts_bytes(english_sentences):
    reference = train_sentencepiece(english_sentences, 100)
    noisy = []
    for sentence in english_sentences:
        noisy += ["", "   ", "\n", sentence.encode("utf-8"), f"  {sentence}\n"]
    noisy = [s for i, s in enumerate(noisy) if i % 5 != 4]  # Keep bytes only.
    assert train_sentencepiece(noisy, 100) == reference


def test_max_sentences(english_sentences):
    first = train_sentencepiece(english_sentences[:50], 100)
    limited = train_sentencepiece(["", *english_sentences], 100, max_sentences=50)
    assert limited == first


def test_bad_model_type(english_sentences):
    with pytest.raises(ValueError, match=r"'bpe', 'unigram'.*model_type='word'"):
        train_sentencepiece(english_sentences, 100, model_type="word")


def test_hard_vocab_limit_suggests_maximum(english_sentences):
    with pytest.raises(
        ValueError, match=r"vocab_size=500 .* at most (\d+) pieces"
    ) as info:
        train_sentencepiece(english_sentences, 500, hard_vocab_limit=True)
    maximum = int(str(info.value).split("at most ")[1].split()[0])
    proto = train_sentencepiece(english_sentences, maximum, hard_vocab_limit=True)
    assert len(_pieces(proto)) == maximum
    # The soft limit (default) gives the same pieces without an error.
    assert _pieces(proto) == _pieces(train_sentencepiece(english_sentences, 500))


@pytest.mark.parametrize(
    "sentences, kwargs, message",
    [
        (["one two"] * 10, {"vocab_size": 5}, r"vocab_size=5 is too small"),
        (["", "  "], {"vocab_size": 50}, r"no non-empty sentence"),
        (["one"], {"vocab_size": 0}, r"positive integer.*vocab_size=0"),
        (["one"], {"vocab_size": 50, "character_coverage": 0.0}, r"\(0, 1\]"),
        (["one"], {"vocab_size": 50, "max_sentences": -1}, r"max_sentences=-1"),
        (["one"], {"vocab_size": 50, "pad_id": 5}, r"\['pad_id'\]"),
    ],
)
def test_invalid_arguments(sentences, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_sentencepiece(sentences, **kwargs)


def test_invalid_sentences():
    with pytest.raises(TypeError, match="not a single string"):
        train_sentencepiece("one two three", 50)
    with pytest.raises(TypeError, match="int at position 1"):
        train_sentencepiece(["one", 2], 50)


def test_training_sentences_cleans_cuts_and_samples():
    sentences = [" a ", "", b"b", "c", "d"]
    assert _training_sentences(sentences, None, None, 0) == ["a", "b", "c", "d"]
    assert _training_sentences(sentences, 2, None, 0) == ["a", "b"]
    sample = _training_sentences(sentences, None, 2, 0)
    assert len(sample) == 2 and set(sample) <= {"a", "b", "c", "d"}
    assert sample == _training_sentences(sentences, None, 2, 0)  # seeded
    with pytest.raises(ValueError, match="no non-empty sentence"):
        _training_sentences(["", "  "], None, None, 0)
