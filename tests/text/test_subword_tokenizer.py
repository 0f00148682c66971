import random

import keras
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.special_tokens import UNK_ID
from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import sanitize_utf8
from keras_transformer.text import train_sentencepiece


def test_vocab_size_and_pieces(tokenizer, model_proto):
    assert isinstance(tokenizer.vocab_size, int)
    assert tokenizer.vocab_size == 100
    assert tokenizer.model_proto == model_proto
    pieces = tokenizer.id_to_piece(tf.constant([PAD_ID, UNK_ID, BOS_ID, EOS_ID]))
    assert pieces.numpy().tolist() == [b"<pad>", b"<unk>", b"<s>", b"</s>"]
    assert tokenizer.piece_to_id(
        tf.constant(["</s>", "no-such-piece"])
    ).numpy().tolist() == [EOS_ID, UNK_ID]


def test_id_to_piece_out_of_range_raises(tokenizer):
    # The raw tf-text op segfaults on such ids; the wrapper must raise.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 100\)"):
        tokenizer.id_to_piece(tf.constant([5, 100]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.function(tokenizer.id_to_piece)(tf.constant([-1]))
    ragged = tf.ragged.constant([[4], [5, 6]])
    assert tokenizer.id_to_piece(ragged).shape.as_list() == [2, None]


def test_encode_decode_round_trip(tokenizer, english_sentences):
    ids = tokenizer.encode(english_sentences)
    assert all(isinstance(i, int) for row in ids for i in row)
    assert all(
        UNK_ID not in row and BOS_ID not in row and EOS_ID not in row for row in ids
    )
    assert tokenizer.decode(ids) == english_sentences
    assert tokenizer.encode([]) == [] and tokenizer.decode([]) == []
    # Same ids as the reference SentencePiece implementation.
    processor = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    assert ids == processor.encode(english_sentences)
    with pytest.raises(TypeError, match="Wrap it in a list"):
        tokenizer.encode("one two")


def test_survives_random_seed_reset(model_proto):
    # tf.random.set_seed clears the eager kernel cache; with tf-text's own
    # kernel-private resource that breaks the tokenizer (tensorflow/text#570).
    tokenizer = SubwordTokenizer(model_proto)
    tokenize = tf.function(tokenizer.tokenize)
    expected = tokenizer.encode(["nine two"])
    keras.utils.set_random_seed(1)
    tf.random.set_seed(2)
    assert tokenizer.encode(["nine two"]) == expected
    assert tokenize(tf.constant(["nine two"])).to_list() == expected
    assert tokenizer.decode(expected) == ["nine two"]


def test_tokenize_shapes(tokenizer):
    batch = tokenizer.tokenize(tf.constant(["one two", "three"]))
    assert isinstance(batch, tf.RaggedTensor) and batch.dtype == tf.int32
    assert batch.shape.as_list() == [2, None]
    single = tokenizer.tokenize("one two")
    assert single.dtype == tf.int32 and single.shape.rank == 1
    assert single.numpy().tolist() == batch[0].numpy().tolist()
    empty_batch = tokenizer.tokenize(tf.constant([], dtype=tf.string))
    assert empty_batch.shape.as_list() == [0, None]


def test_tokenize_in_tf_function_and_dataset_equals_eager(tokenizer, english_sentences):
    eager = tokenizer.tokenize(tf.constant(english_sentences)).to_list()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(strings):
        return tokenizer.tokenize(strings)

    assert tokenize(tf.constant(english_sentences)).to_list() == eager

    dataset = tf.data.Dataset.from_tensor_slices(english_sentences)
    per_element = dataset.map(
        tokenizer.tokenize, num_parallel_calls=4, deterministic=True
    )
    assert [x.tolist() for x in per_element.as_numpy_iterator()] == eager
    batched = dataset.batch(32).map(tokenizer.tokenize)
    rows = [row for batch in batched for row in batch.to_list()]
    assert rows == eager


def test_detokenize_drops_pad_bos_and_after_eos(tokenizer):
    ids = tokenizer.encode(["nine two", "three"])
    a, b = ids[0], ids[1]
    reference = tokenizer.detokenize(tf.ragged.constant([a, b])).numpy().tolist()
    assert reference == [b"nine two", b"three"]
    width = len(a) + 6
    dense = np.zeros((2, width), dtype=np.int32)
    dense[0, : len(a) + 2] = [*a, EOS_ID, 0]  # [..., 3, 0, 0, ...]
    row = [BOS_ID, *b, EOS_ID, *a]  # BOS, text, EOS, garbage after EOS.
    dense[1, : len(row)] = row
    assert tokenizer.detokenize(dense).numpy().tolist() == reference
    assert (
        tokenizer.detokenize(tf.constant(dense, tf.int64)).numpy().tolist() == reference
    )
    ragged = tf.ragged.constant([[*a, EOS_ID, PAD_ID], [BOS_ID, *b]])
    assert tokenizer.detokenize(ragged).numpy().tolist() == reference
    assert tokenizer.decode([[*a, EOS_ID, 7, 8], [PAD_ID, PAD_ID]]) == ["nine two", ""]
    single = tokenizer.detokenize(tf.constant([BOS_ID, *a, EOS_ID, 0]))
    assert single.shape.rank == 0 and single.numpy() == b"nine two"

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(ids):
        return tokenizer.detokenize(ids)

    assert detokenize(dense).numpy().tolist() == reference
    assert detokenize(tf.zeros([0, 4], tf.int32)).shape.as_list() == [0]


def test_detokenize_out_of_range_ids_become_unk(tokenizer):
    # A model with a padded output vocabulary may emit ids >= vocab_size.
    ids = tokenizer.encode(["nine"])[0]
    text = tokenizer.detokenize(tf.constant([[*ids, 100, -5, 10**6]])).numpy()[0]
    assert text.decode("utf-8") == "nine ⁇  ⁇  ⁇ "
    with pytest.raises(TypeError, match="integer ids"):
        tokenizer.detokenize(tf.constant([[1.0]]))
    with pytest.raises(ValueError, match="shape"):
        tokenizer.detokenize(tf.zeros([1, 2, 3], tf.int32))


def test_invalid_utf8_empty_and_long_lines(tokenizer):
    strings = tf.constant([b"\xff\xfe", b"one \xff two", b"", b"one\xe6"])
    ids = tokenizer.tokenize(strings).to_list()
    assert UNK_ID in ids[0]
    assert tokenizer.encode(["one"])[0] == ids[1][: len(tokenizer.encode(["one"])[0])]
    assert ids[2] == []
    sanitized = tokenizer.tokenize(strings, sanitize=True).to_list()
    assert sanitized[2] == [] and len(sanitized) == 4
    long_line = " ".join(["seven hundred and twelve"] * 2500)  # 10,000 words.
    row = tokenizer.tokenize(tf.constant([long_line]))
    assert int(row.row_lengths()[0]) >= 10_000
    assert tokenizer.detokenize(row).numpy()[0].decode() == long_line


def test_random_bytes_do_not_crash(tokenizer):
    rng = random.Random(0)
    garbage = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(500)
    ]
    dataset = (
        tf.data.Dataset.from_tensor_slices(garbage).batch(50).map(tokenizer.tokenize)
    )
    count = sum(int(batch.nrows()) for batch in dataset)
    assert count == 500
    texts = tokenizer.detokenize(tokenizer.tokenize(tf.constant(garbage)))
    assert texts.shape.as_list() == [500]


def test_sanitize_utf8():
    out = sanitize_utf8(tf.constant([b"ok", b"a\xffb", b"\xe6\x97"])).numpy().tolist()
    assert out == [b"ok", "a\ufffdb".encode(), "\ufffd".encode()]
    for text in out:
        text.decode("utf-8")


def test_save_load_round_trip(tokenizer, english_sentences, tmp_path):
    path = tokenizer.save(str(tmp_path / "vocab"))
    assert path == str(tmp_path / "vocab" / "subword_tokenizer.model")
    with open(path, "rb") as f:
        assert f.read() == tokenizer.model_proto
    loaded = SubwordTokenizer.load(path)
    assert loaded.name == "subword_tokenizer"
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(english_sentences) == tokenizer.encode(english_sentences)
    other = SubwordTokenizer.load(tokenizer.save(str(tmp_path), name="my-vocab"))
    assert other.name == "my_vocab"


def test_load_errors_name_the_file(tmp_path, english_sentences):
    missing = tmp_path / "missing.model"
    with pytest.raises(ValueError, match=f"not found: {missing}"):
        SubwordTokenizer.load(str(missing))
    with pytest.raises(ValueError, match="directory"):
        SubwordTokenizer.load(str(tmp_path))
    for content in [b"", b"\x00garbage\xff" * 10]:
        corrupted = tmp_path / "corrupted.model"
        corrupted.write_bytes(content)
        with pytest.raises(ValueError, match=f"{corrupted}"):
            SubwordTokenizer.load(str(corrupted))
    # A valid SentencePiece model with SentencePiece's default ids.
    import io

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(english_sentences),
        model_writer=writer,
        vocab_size=60,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="special ids"):
        SubwordTokenizer(writer.getvalue())
    with pytest.raises(TypeError, match="SubwordTokenizer.load"):
        SubwordTokenizer("vocab.model")


def test_unigram_model(english_sentences):
    tokenizer = SubwordTokenizer(
        train_sentencepiece(english_sentences, 60, model_type="unigram")
    )
    assert (
        tokenizer.decode(tokenizer.encode(english_sentences[:20]))
        == english_sentences[:20]
    )
