"""The steps of `make_dataset`, one at a time."""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.data import pipeline
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID


def testteacher_forcing_ids_adds_the_special_tokens():
    source = tf.ragged.constant([[5, 6], [7]])
    target = tf.constant([[8, 9, 10], [11, PAD_ID, PAD_ID]])  # dense, padded
    source, target_in, target_out = pipeline.teacher_forcing_ids(source, target)
    assert source.to_list() == [[5, 6, EOS_ID], [7, EOS_ID]]
    assert target_in.to_list() == [[BOS_ID, 8, 9, 10], [BOS_ID, 11]]
    assert target_out.to_list() == [[8, 9, 10, EOS_ID], [11, EOS_ID]]
    assert all(t.dtype == tf.int32 for t in (source, target_in, target_out))


def test_dense_rows_keeps_and_pads():
    ids = tf.ragged.constant([[1, 2, 3], [4], [5, 6]])
    rows = pipeline._dense_rows(ids, tf.constant([False, True, True]), width=4)
    np.testing.assert_array_equal(rows, [[4, 0, 0, 0], [5, 6, 0, 0]])


def test_prepare_fn_drops_pairs_over_the_limits():
    plan = pipeline._BucketPlan(2, None, 4, 4, [2], "pair")
    prepare = pipeline._prepare_fn(
        lambda s: tf.strings.unicode_decode(s, "UTF-8"),
        lambda s: tf.strings.unicode_decode(s, "UTF-8"),
        plan,
        max_source_length=4,
        max_target_length=4,
    )
    # Lengths with EOS/BOS: (2, 3) kept, (5, 2) and (2, 5) dropped, (4, 4) kept.
    keys, source_length, target_length, source, target_in, target_out = prepare(
        tf.constant(["a", "abcd", "b", "abc"]), tf.constant(["xy", "x", "wxyz", "xyz"])
    )
    np.testing.assert_array_equal(source_length, [2, 4])
    np.testing.assert_array_equal(target_length, [3, 4])
    np.testing.assert_array_equal(keys, plan.keys(source_length, target_length))
    assert source.shape == (2, 4) and target_in.shape == target_out.shape == (2, 4)


def test_batch_sizes_by_sentences_or_by_tokens():
    pairs = [(8, 8), (8, 16), (16, 4)]
    assert pipeline._batch_sizes(pairs, 32, None) == [32, 32, 32]
    assert pipeline._batch_sizes(pairs, None, 64) == [8, 4, 4]
    with pytest.raises(ValueError, match="smaller than the longest bucket"):
        pipeline._batch_sizes(pairs, None, 15)


@pytest.mark.parametrize(
    "args, message",
    [
        ((8, 64, 16, 16, "pair"), "exactly one of"),
        ((None, None, 16, 16, "pair"), "exactly one of"),
        ((True, None, 16, 16, "pair"), "`batch_size` must be an int >= 1"),
        ((None, 64, 16, 0, "pair"), "`max_target_length` must be an int >= 1"),
        ((8, None, 1, 16, "pair"), "must be >= 2"),
        ((8, None, 16, 16, "both"), "`bucket_by` must be one of"),
    ],
)
def test_check_plan(args, message):
    with pytest.raises(ValueError, match=message):
        pipeline._check_plan(*args)


def test_pair_strings_shuffles_and_repeats():
    pairs = [(f"s{i}", f"t{i}") for i in range(5)]
    plain = list(pipeline._pair_strings(pairs, False, 10, None, False))
    assert [(s.numpy().decode(), t.numpy().decode()) for s, t in plain] == pairs
    shuffled = pipeline._pair_strings(pairs, True, 10, 0, True).take(10)
    sources = sorted(s.numpy().decode() for s, _ in shuffled)
    assert sources == sorted([s for s, _ in pairs] * 2)
