"""The steps of `decoding.beam.beam_search`, against numpy and by hand."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_transformer.decoding import beam_search
from keras_transformer.decoding import greedy_search
from keras_transformer.decoding.beam import initial_beams
from keras_transformer.decoding.beam import reorder_cache
from keras_transformer.decoding.beam import select_alive
from keras_transformer.decoding.beam import select_final
from keras_transformer.decoding.beam import select_finished
from keras_transformer.decoding.beam import sentences_done
from keras_transformer.decoding.utils import length_penalty
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

NEG = -1e9


def _np(tensors):
    return {name: np.asarray(value) for name, value in tensors.items()}


def _take(values, indices):
    """numpy `gather_beams`: `values[b, indices[b, j]]`."""
    expand = indices.reshape(indices.shape + (1,) * (values.ndim - 2))
    return np.take_along_axis(values, expand, axis=1)


def _best(scores, k):
    """numpy `ops.top_k` indices: descending, ties to the lowest index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


# Two sentences, four candidates each (2 * beam_size, beam_size = 2), over
# sequences of length 3. Row 0: the best candidate ends; row 1: a tie.
CANDIDATES = {
    "log_probs": np.array(
        [[-0.1, -0.5, -0.7, -1.2], [-0.2, -0.2, -0.3, -0.9]], "float32"
    ),
    "beams": np.array([[0, 1, 0, 1], [1, 0, 0, 1]], "int32"),
    "is_eos": np.array([[True, False, False, False], [False, False, True, False]]),
    "scores": np.array(
        [[-0.15, -0.6, -0.8, -1.3], [-0.25, -0.25, -0.4, -1.0]], "float32"
    ),
    "seq": np.arange(2 * 4 * 3, dtype="int32").reshape(2, 4, 3),
}


def test_select_alive_keeps_the_best_candidates_that_did_not_end():
    alive, parents = select_alive(CANDIDATES, beam_size=2)
    alive, parents = _np(alive), np.asarray(parents)
    # By hand: row 0 drops its EOS candidate; row 1's tie goes to index 0.
    keep = np.array([[1, 2], [0, 1]])
    np.testing.assert_array_equal(parents, [[1, 0], [1, 0]])
    # numpy reference.
    masked = np.where(CANDIDATES["is_eos"], NEG, CANDIDATES["log_probs"])
    np.testing.assert_array_equal(_best(masked, 2), keep)
    np.testing.assert_array_equal(parents, _take(CANDIDATES["beams"], keep))
    np.testing.assert_allclose(alive["alive_log_probs"], _take(masked, keep))
    np.testing.assert_array_equal(alive["alive_seq"], _take(CANDIDATES["seq"], keep))
    assert "alive_attention" not in alive


def test_select_alive_carries_attention():
    attention = np.random.default_rng(0).uniform(size=(2, 4, 5, 3)).astype("float32")
    alive, _ = select_alive({**CANDIDATES, "attention": attention}, beam_size=2)
    keep = np.array([[1, 2], [0, 1]])
    np.testing.assert_array_equal(alive["alive_attention"], _take(attention, keep))


def test_select_finished_merges_the_finished_set_and_new_endings():
    state = {
        "finished_scores": np.array([[-0.3, NEG], [NEG, NEG]], "float32"),
        "finished_flags": np.array([[True, False], [False, False]]),
        "finished_seq": -np.arange(2 * 2 * 3, dtype="int32").reshape(2, 2, 3),
    }
    finished = _np(select_finished(state, CANDIDATES, beam_size=2))
    # By hand. Row 0: the new ending (-0.15) beats the old one (-0.3).
    # Row 1: one new ending (-0.4), then an empty slot (the lowest index
    # among equal scores: the old set's first slot, not finished).
    np.testing.assert_allclose(
        finished["finished_scores"], [[-0.15, -0.3], [-0.4, NEG]]
    )
    np.testing.assert_array_equal(
        finished["finished_flags"], [[True, True], [True, False]]
    )
    seq = np.concatenate([state["finished_seq"], CANDIDATES["seq"]], axis=1)
    np.testing.assert_array_equal(
        finished["finished_seq"], _take(seq, np.array([[2, 0], [4, 0]]))
    )
    # numpy reference.
    endings = np.where(CANDIDATES["is_eos"], CANDIDATES["scores"], NEG)
    merged = np.concatenate([state["finished_scores"], endings], axis=1)
    pick = _best(merged, 2)
    np.testing.assert_array_equal(finished["finished_seq"], _take(seq, pick))
    flags = np.concatenate([state["finished_flags"], CANDIDATES["is_eos"]], axis=1)
    np.testing.assert_array_equal(finished["finished_flags"], _take(flags, pick))


def test_select_final_prefers_finished_and_falls_back_on_alive():
    final_penalty = 1.5
    state = {
        # Row 0: one finished hypothesis; row 1: none.
        "finished_flags": np.array([[True, False], [False, False]]),
        "finished_scores": np.array([[-0.5, NEG], [NEG, NEG]], "float32"),
        "finished_seq": np.array(
            [[[2, 7, 3], [2, 0, 0]], [[2, 0, 0], [2, 0, 0]]], "int32"
        ),
        "alive_log_probs": np.array([[-1.0, -2.0], [-3.0, -0.6]], "float32"),
        "alive_seq": np.array(
            [[[2, 5, 6], [2, 5, 5]], [[2, 8, 8], [2, 9, 9]]], "int32"
        ),
    }
    outputs = _np(select_final(state, 2, final_penalty))
    np.testing.assert_array_equal(outputs["ids"], [[[7, 3], [5, 6]], [[9, 9], [8, 8]]])
    np.testing.assert_allclose(
        outputs["scores"], [[-0.5, -1.0 / 1.5], [-0.6 / 1.5, -3.0 / 1.5]], rtol=1e-6
    )
    assert "attention" not in outputs


def test_sentences_done_against_the_best_reachable_score():
    alpha, max_length = 0.6, 10
    final_penalty = length_penalty(max_length, alpha)
    state = {
        "index": np.int32(3),
        "alive_log_probs": np.array(
            [[-1.0, -2.0], [-1.0, -2.0], [-1.0, -2.0], [-0.1, -2.0]], "float32"
        ),
        "finished_flags": np.array(
            [[True, True], [True, False], [True, True], [True, True]]
        ),
        "finished_scores": np.array(
            [[-0.2, -0.5], [-0.2, NEG], [-0.2, -5.0], [-0.2, -0.5]], "float32"
        ),
    }
    tensors = {name: ops.convert_to_tensor(value) for name, value in state.items()}
    done = np.asarray(sentences_done(tensors, 2, alpha, final_penalty))
    # numpy reference: the n-th finished score against the best alive score
    # over the largest penalty still possible.
    bound = state["alive_log_probs"][:, 0] / ((5.0 + max_length) / 6.0) ** alpha
    want = state["finished_flags"][:, 1] & (state["finished_scores"][:, 1] >= bound)
    np.testing.assert_array_equal(done, want)
    np.testing.assert_array_equal(done, [True, False, False, False])
    # With n = 1 the first finished score counts: only row 3's alive
    # hypothesis could still beat it.
    done = np.asarray(sentences_done(tensors, 1, alpha, final_penalty))
    np.testing.assert_array_equal(done, [True, True, True, False])


def test_initial_beams():
    tokens = np.array([[2, 0, 0]] * 6, "int32")  # 3 sentences x 2 beams
    state = _np(
        {
            name: value
            for name, value in initial_beams(
                tokens, {}, np.zeros((1, 1)), 2, attention_shape=(3, 2, 2, 4)
            ).items()
            if name != "cache"
        }
    )
    np.testing.assert_array_equal(state["alive_seq"], tokens.reshape(3, 2, 3))
    np.testing.assert_array_equal(state["alive_log_probs"], [[0.0, NEG]] * 3)
    np.testing.assert_array_equal(state["finished_flags"], False)
    np.testing.assert_array_equal(state["finished_scores"], NEG)
    assert state["index"] == 0
    assert state["alive_attention"].shape == state["finished_attention"].shape
    assert state["alive_attention"].shape == (3, 2, 2, 4)
    assert "alive_attention" not in initial_beams(tokens, {}, None, 2)


def test_reorder_cache_moves_only_the_ancestry_of_a_beam_cache():
    ancestry = np.arange(2 * 3 * 4, dtype="int32").reshape(2, 3, 4)
    key = np.zeros((2, 1, 12, 2), "float32")
    cache = {"ancestry": ancestry, "self": [{"key": key}], "cross": ["shared"]}
    parents = np.array([[2, 2, 0], [1, 0, 1]], "int32")
    reordered = reorder_cache(cache, parents, beam_size=3)
    np.testing.assert_array_equal(reordered["ancestry"], _take(ancestry, parents))
    assert reordered["self"] is cache["self"]
    assert reordered["cross"] is cache["cross"]


def test_reorder_cache_gathers_caches_with_one_row_per_beam():
    # Rows: sentence 0's beams 0 and 1, then sentence 1's beams.
    key = np.arange(4, dtype="float32").reshape(4, 1, 1, 1) * np.ones((4, 1, 2, 1))
    cache = {"self": [{"key": key, "value": -key}], "cross": ["shared"]}
    parents = np.array([[1, 1], [1, 0]], "int32")
    reordered = reorder_cache(cache, parents, beam_size=2)
    rows = [1, 1, 3, 2]
    np.testing.assert_array_equal(reordered["self"][0]["key"], key[rows])
    np.testing.assert_array_equal(reordered["self"][0]["value"], -key[rows])
    assert reordered["cross"] is cache["cross"]
    assert reorder_cache(cache, parents[:, :1], beam_size=1) is cache


class _MarkovModel:
    """A stand-in decoder: the next token's logits depend on the last token.

    Has only what the searches call (`encode`, `init_cache`, `decode`,
    `target_embedding.output_projection`, sizes and special ids), with one
    self-attention cache row per beam and no buffers.
    """

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def __init__(self, next_token_probs):
        # Special ids never chosen: a finite, negligible logit.
        self.table = np.log(np.maximum(next_token_probs, 1e-13)).astype("float32")
        self.output_vocabulary_size = self.table.shape[1]
        self.target_embedding = self

    def output_projection(self):
        return ops.zeros((1, 1))

    def encode(self, source_ids, training=None):
        return ops.zeros_like(ops.cast(source_ids, "float32"))[..., None]

    def init_cache(self, encoder_outputs, max_length, beam_size=1):
        return {"self": []}

    def decode(self, ids, encoder_outputs, cache=None, **kwargs):
        return ops.take(self.table, ids[:, 0], axis=0)[:, None], [], cache


def _trap_model():
    """After BOS, token 4 (0.5) beats token 5 (0.4); but 4 is followed by
    EOS with 0.35 only, 5 by EOS with 0.9: greedy finds 4 EOS (P = 0.175),
    beam search 5 EOS (P = 0.36)."""
    probs = np.full((6, 6), 0.25)
    probs[:, [PAD_ID, BOS_ID]] = 0.0
    probs[BOS_ID] = [0, 0.1, 0, 0, 0.5, 0.4]
    probs[4] = [0, 0.25, 0, 0.35, 0.2, 0.2]
    probs[5] = [0, 0.1 / 3, 0, 0.9, 0.1 / 3, 0.1 / 3]
    return _MarkovModel(probs)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_beam_search_drives_any_step_model_and_escapes_the_greedy_trap(jit_compile):
    model = _trap_model()
    source = tf.constant([[7, 8, 3]], tf.int32)
    run = lambda search: tf.function(search, jit_compile=jit_compile, autograph=False)(
        source
    )
    greedy = run(lambda s: greedy_search(model, s, 4))
    beam = run(
        lambda s: beam_search(
            model, s, 4, beam_size=2, alpha=0.6, num_return_sequences=2
        )
    )
    np.testing.assert_array_equal(greedy["ids"], [[4, EOS_ID, 0, 0]])
    np.testing.assert_array_equal(beam["ids"], [[[5, EOS_ID, 0, 0], [4, EOS_ID, 0, 0]]])
    penalty = ((5.0 + 2) / 6.0) ** 0.6
    np.testing.assert_allclose(
        beam["scores"], [[np.log(0.36) / penalty, np.log(0.175) / penalty]], rtol=1e-5
    )
