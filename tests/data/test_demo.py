from keras_transformer.data import demo_numbers
from keras_transformer.data import demo_pair
from keras_transformer.data import demo_pairs


def test_example_pair():
    assert demo_pair(4215) == (
        "four thousand, two hundred and fifteen",
        "viertausendzweihundertfünfzehn",
    )


def test_splits_are_deterministic_disjoint_and_complete():
    splits = {name: demo_numbers(name) for name in ("train", "valid", "test")}
    assert splits == {name: demo_numbers(name) for name in splits}
    train, valid, test = (set(splits[n]) for n in ("train", "valid", "test"))
    assert not train & valid and not train & test and not valid & test
    assert train | valid | test == set(range(10_000))
    assert set(range(100)) <= train
    assert (len(valid), len(test)) == (495, 990)


def test_other_seed_other_split():
    assert demo_numbers("test", seed=1) != demo_numbers("test", seed=0)


def test_pairs_are_the_words_of_the_numbers():
    corpus = demo_pairs("valid")
    pairs = list(corpus)
    assert len(pairs) == len(corpus) == 495
    assert pairs[0] == demo_pair(demo_numbers("valid")[0])
