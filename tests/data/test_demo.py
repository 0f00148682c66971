import pytest

from keras_transformer.data import DEFAULT_MAX_NUMBER
from keras_transformer.data import demo_numbers
from keras_transformer.data import demo_pair
from keras_transformer.data import demo_pairs

SPLITS = ("train", "valid", "test")


def test_example_pairs_are_exact():
    assert demo_pair(4215) == (
        "four thousand, two hundred and fifteen",
        "viertausendzweihundertfünfzehn",
    )
    assert demo_pair(21) == ("twenty-one", "einundzwanzig")
    assert demo_pair(1001) == ("one thousand and one", "eintausendeins")


def test_default_splits_deterministic_disjoint_complete():
    assert DEFAULT_MAX_NUMBER == 9999
    splits = {name: demo_numbers(name) for name in SPLITS}
    assert splits == {name: demo_numbers(name) for name in SPLITS}
    train, valid, test = (set(splits[name]) for name in SPLITS)
    assert not train & valid and not train & test and not valid & test
    assert train | valid | test == set(range(10_000))
    assert (len(train), len(valid), len(test)) == (8515, 495, 990)
    assert set(range(100)) <= train  # irregular words are always trained
    assert splits["test"] == sorted(splits["test"])


def test_small_range_and_seed():
    sizes = [len(demo_numbers(name, max_number=999)) for name in SPLITS]
    assert sizes == [865, 45, 90]
    assert demo_numbers("test", seed=1) != demo_numbers("test", seed=0)
    assert set(demo_numbers("test", seed=1)).isdisjoint(demo_numbers("train", seed=1))


def test_held_out_numbers_are_made_of_trained_pieces():
    # Each piece of a test number (thousands word, hundreds word, last two
    # digits after "hundred and"/"thousand and") occurs in training numbers.
    train = [n for n in demo_numbers("train") if n >= 100]
    thousands = {n // 1000 for n in train}
    hundreds = {n // 100 % 10 for n in train}
    endings = {n % 100 for n in train}
    for n in demo_numbers("test"):
        assert n // 1000 in thousands
        assert n // 100 % 10 in hundreds
        assert n % 100 in endings


def test_pairs_follow_the_numbers():
    corpus = demo_pairs("valid")
    pairs = list(corpus)
    assert len(pairs) == len(corpus) == 495
    assert corpus.numbers == demo_numbers("valid")
    assert pairs == [demo_pair(n) for n in corpus.numbers]
    test = demo_pairs("test", max_number=999)
    assert test.name == "demo:999:test" and len(test) == 90


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "dev"}, "`split` must be one of"),
        ({"max_number": 50}, "at least 100"),
        ({"max_number": 99.5}, "must be an int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        demo_numbers(**kwargs)
