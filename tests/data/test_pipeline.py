import collections

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.data import DEFAULT_BOUNDARIES
from keras_transformer.data import FINE_BOUNDARIES
from keras_transformer.data import DataError
from keras_transformer.data import InMemoryCorpus
from keras_transformer.data import bucket_lengths
from keras_transformer.data import bucket_shapes
from keras_transformer.data import demo_pairs
from keras_transformer.data import make_dataset
from keras_transformer.data import padding_fraction
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.special_tokens import UNK_ID

OFFSET = 4  # ids 0..3 are PAD, UNK, BOS, EOS


def char_tokenize(strings):
    """Stand-in tokenizer, in the graph: Unicode code points + 4."""
    return tf.strings.unicode_decode(strings, "UTF-8") + OFFSET


def char_detokenize(ids):
    return "".join(chr(i - OFFSET) for i in ids)


def word_table_tokenizer(words):
    """Stand-in tokenizer with a `tf.lookup` table: one id per known word."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(words), tf.range(OFFSET, OFFSET + len(words), dtype=tf.int64)
        ),
        default_value=UNK_ID,
    )
    return lambda strings: tf.ragged.map_flat_values(
        table.lookup, tf.strings.split(strings)
    )


def random_pairs(count=600, seed=0):
    rng = np.random.default_rng(seed)
    words = ["a", "bb", "ccc", "dddd", "e"]
    pairs = []
    for _ in range(count):
        n = int(rng.integers(1, 12))
        source = " ".join(rng.choice(words, n))
        target = "".join(rng.choice(words, max(1, n // 2)))
        pairs.append((source, target))
    return pairs


def rows(ids):
    """The unpadded rows of a batch."""
    return [[int(i) for i in row if i != PAD_ID] for row in np.asarray(ids)]


def test_teacher_forcing_shift():
    dataset = make_dataset([("ab", "xyz")], char_tokenize, char_tokenize,
                           batch_size=1, shuffle=False)  # fmt: skip
    ((inputs, target_out),) = list(dataset)
    a, b, x, y, z = (ord(c) + OFFSET for c in "abxyz")
    np.testing.assert_array_equal(inputs["source"][0], [a, b, EOS_ID] + [PAD_ID] * 5)
    np.testing.assert_array_equal(inputs["target"][0], [BOS_ID, x, y, z] + [0] * 4)
    np.testing.assert_array_equal(target_out[0], [x, y, z, EOS_ID] + [0] * 4)
    assert all(t.dtype == tf.int32 for t in (*inputs.values(), target_out))


def test_every_pair_comes_out_once_correctly_shifted():
    pairs = random_pairs(300)
    dataset = make_dataset(pairs, char_tokenize, char_tokenize, batch_size=16,
                           max_source_length=64, max_target_length=64, seed=3,
                           drop_remainder=False)  # fmt: skip
    seen = []
    for inputs, target_out in dataset:
        for source, target_in, out in zip(
            rows(inputs["source"]), rows(inputs["target"]), rows(target_out)
        ):
            assert source[-1] == EOS_ID and out[-1] == EOS_ID
            assert target_in[0] == BOS_ID and target_in[1:] == out[:-1]
            seen.append((char_detokenize(source[:-1]), char_detokenize(out[:-1])))
    assert collections.Counter(seen) == collections.Counter(pairs)


def test_static_shapes_from_the_allowed_set_and_padding_fraction():
    settings = dict(batch_size=32, max_source_length=64, max_target_length=64)
    dataset = make_dataset(demo_pairs("train"), char_tokenize, char_tokenize,
                           seed=1, **settings)  # fmt: skip
    stats = padding_fraction(dataset)
    allowed = set(bucket_shapes(**settings))
    assert stats["shapes"] <= allowed
    assert len(allowed) == 49  # 7 x 7 padded lengths 8, 12, 16, 24, 32, 48, 64
    print(
        f"\ndemo corpus, characters, batch 32: padding {stats['source']:.3f} "
        f"(source), {stats['target']:.3f} (target); {len(stats['shapes'])} of "
        f"{len(allowed)} bucket shapes; {stats['pairs']} of 8515 pairs in "
        f"{stats['batches']} batches"
    )
    # Measured: 0.115 (source) and 0.189 (target), 7 of the 49 shapes, 8352
    # of the 8515 pairs (the rest are the buckets' last partial batches).
    assert stats["source"] < 0.13 and stats["target"] < 0.21
    assert len(stats["shapes"]) <= 10


def test_fine_boundaries_refine_the_default_and_halve_the_padding():
    # Four lengths per octave: every default boundary, each step <= 1.25x.
    assert set(DEFAULT_BOUNDARIES) <= set(FINE_BOUNDARIES)
    steps = np.array(FINE_BOUNDARIES[1:]) / np.array(FINE_BOUNDARIES[:-1])
    assert steps.max() <= 1.25 and steps.min() > 1
    rng = np.random.default_rng(3)
    pairs = [
        ("a" * int(s), "b" * int(t)) for s, t in rng.integers(6, 127, size=(3000, 2))
    ]
    settings = dict(batch_tokens=1024, max_source_length=128,
                    max_target_length=128)  # fmt: skip
    stats = {}
    for name, boundaries in (("default", None), ("fine", FINE_BOUNDARIES)):
        dataset = make_dataset(pairs, char_tokenize, char_tokenize, seed=4,
                               bucket_boundaries=boundaries, **settings)  # fmt: skip
        stats[name] = padding_fraction(dataset)
        allowed = bucket_shapes(bucket_boundaries=boundaries, **settings)
        assert stats[name]["shapes"] <= set(allowed)
    # Measured: 0.136 (default) and 0.072 (fine) padding per side; 48 and 86
    # shapes; 2545 and 1760 of the 3000 pairs (partial batches dropped).
    for side in ("source", "target"):
        assert stats["fine"][side] < 0.6 * stats["default"][side]
    assert len(stats["fine"]["shapes"]) > len(stats["default"]["shapes"])


def test_longest_bucketing_has_fewer_shapes():
    settings = dict(batch_size=16, max_source_length=64, max_target_length=32,
                    bucket_by="longest")  # fmt: skip
    allowed = bucket_shapes(**settings)
    assert [shape[1:] for shape in allowed] == [
        (8, 8), (12, 12), (16, 16), (24, 24), (32, 32), (48, 32), (64, 32)
    ]  # fmt: skip
    dataset = make_dataset(random_pairs(), char_tokenize, char_tokenize, seed=1,
                           **settings)  # fmt: skip
    stats = padding_fraction(dataset)
    assert stats["shapes"] <= set(allowed) and stats["batches"] > 10


@pytest.mark.parametrize("bucket_by", ["pair", "longest"])
def test_token_budget_is_never_exceeded(bucket_by):
    budget = 256
    dataset = make_dataset(random_pairs(), char_tokenize, char_tokenize,
                           batch_tokens=budget, max_source_length=64,
                           max_target_length=64, seed=2,
                           bucket_by=bucket_by)  # fmt: skip
    batches = 0
    for inputs, target_out in dataset:
        for ids in (inputs["source"], inputs["target"], target_out):
            assert np.prod(ids.shape) <= budget
        # Full batches: the batch is as large as the budget allows.
        batch, source_length = inputs["source"].shape
        assert batch == budget // max(source_length, target_out.shape[1])
        batches += 1
    assert batches > 5


def test_length_filter_counts_eos_and_bos():
    pairs = [
        ("a" * 15, "b"),  # 15 + EOS = 16: kept
        ("a" * 16, "b"),  # 17: dropped
        ("a", "b" * 15),  # BOS + 15 = 16: kept
        ("a", "b" * 16),  # dropped
    ]
    dataset = make_dataset(pairs, char_tokenize, char_tokenize, batch_size=1,
                           max_source_length=16, max_target_length=16,
                           shuffle=False)  # fmt: skip
    kept = [
        (inputs["source"].shape, target_out.shape) for inputs, target_out in dataset
    ]
    assert kept == [((1, 16), (1, 8)), ((1, 8), (1, 16))]


def test_repeat_loses_no_pair_at_epoch_ends():
    pairs = [(f"s{i}", f"t{i}") for i in range(10)]  # one bucket
    dataset = make_dataset(pairs, char_tokenize, char_tokenize, batch_size=4,
                           shuffle=False, repeat=True)  # fmt: skip
    sources = [
        char_detokenize(row[:-1])
        for inputs, _ in dataset.take(5)
        for row in rows(inputs["source"])
    ]
    assert collections.Counter(sources) == {source: 2 for source, _ in pairs}


def test_pad_to_batch_instead_of_bucket():
    dataset = make_dataset([("abc", "x"), ("abcd", "xy")], char_tokenize,
                           char_tokenize, batch_size=2, shuffle=False,
                           pad_to_bucket=False)  # fmt: skip
    ((inputs, target_out),) = list(dataset)
    assert inputs["source"].shape == (2, 5) and target_out.shape == (2, 3)


def test_dataset_input_and_word_table_tokenizer():
    words = ["one", "two", "eins", "zwei"]
    tokenize = word_table_tokenizer(words)
    pairs = tf.data.Dataset.from_tensor_slices(
        (["one two", "two", "one zzz"], ["eins zwei", "zwei", "eins"])
    )
    dataset = make_dataset(pairs, tokenize, tokenize, batch_size=3,
                           shuffle=False)  # fmt: skip
    ((inputs, target_out),) = list(dataset)
    assert rows(inputs["source"]) == [[4, 5, EOS_ID], [5, EOS_ID], [4, UNK_ID, EOS_ID]]
    assert rows(target_out) == [[6, 7, EOS_ID], [7, EOS_ID], [6, EOS_ID]]


def test_dense_and_nested_tokenizer_outputs():
    dense = lambda strings: char_tokenize(strings).to_tensor()  # PAD-padded
    nested = lambda strings: (
        tf.strings.unicode_decode(tf.strings.split(strings), "UTF-8") + OFFSET
    )  # [N, words, chars]
    pairs = [("ab c", "x"), ("a", "yz")]
    for tokenize in (dense, nested):
        dataset = make_dataset(pairs, tokenize, char_tokenize, batch_size=2,
                               shuffle=False)  # fmt: skip
        ((inputs, _),) = list(dataset)
        lengths = sorted(len(row) for row in rows(inputs["source"]))
        assert lengths == ([2, 5] if tokenize is dense else [2, 4])


def test_bucket_lengths():
    assert bucket_lengths(48) == [8, 12, 16, 24, 32, 48]
    assert bucket_lengths(40, boundaries=[20, 10, 60]) == [10, 20, 40]
    assert bucket_shapes(batch_tokens=4096, max_source_length=16,
                         max_target_length=16, bucket_by="longest") == [
        (256, 16, 16), (341, 12, 12), (512, 8, 8)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "exactly one"),
        ({"batch_size": 8, "batch_tokens": 64}, ValueError, "exactly one"),
        ({"batch_tokens": 10, "max_source_length": 64}, ValueError, "smaller than"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1"),
        ({"batch_size": 8, "max_target_length": 1}, ValueError, "must be >= 2"),
        ({"batch_size": 8, "bucket_by": "max"}, ValueError, "`bucket_by` must be"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_dataset(random_pairs(10), char_tokenize, char_tokenize, **kwargs)


def test_bad_pairs():
    with pytest.raises(DataError, match="no sentence pairs"):
        make_dataset([], char_tokenize, char_tokenize, batch_size=2)
    with pytest.raises(DataError, match="pair 1 is not a"):
        make_dataset([("a", "b"), ("c",)], char_tokenize, char_tokenize, batch_size=2)
    with pytest.raises(DataError, match="scalar tf.string pairs"):
        make_dataset(tf.data.Dataset.range(3), char_tokenize, char_tokenize,
                     batch_size=2)  # fmt: skip
    with pytest.raises(DataError, match="use parse_spec"):
        make_dataset("tsv:a.tsv", char_tokenize, char_tokenize, batch_size=2)
    assert len(InMemoryCorpus([(b"eins", "one")])) == 1
