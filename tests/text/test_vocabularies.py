import json
import os

import pytest

from keras_transformer.special_tokens import UNK_ID
from keras_transformer.text import MANIFEST_FILE
from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import build_vocabularies
from keras_transformer.text import load_vocabularies
from keras_transformer.text import save_vocabularies


@pytest.fixture(scope="module")
def shared(english_sentences, spanish_sentences):
    return build_vocabularies(english_sentences, spanish_sentences, 200)


@pytest.fixture(scope="module")
def separate(english_sentences, spanish_sentences):
    return build_vocabularies(english_sentences, spanish_sentences, 200, shared=False)


def test_shared_vocabulary_covers_both_languages(
    shared, english_sentences, spanish_sentences
):
    source, target = shared
    assert source is target
    assert isinstance(source, SubwordTokenizer) and source.name == "shared"
    for sentences in (english_sentences, spanish_sentences):
        ids = source.encode(sentences)
        assert not any(UNK_ID in row for row in ids)
        assert source.decode(ids) == sentences


def test_separate_vocabularies(separate, english_sentences, spanish_sentences):
    source, target = separate
    assert source is not target
    assert (source.name, target.name) == ("source", "target")
    assert source.decode(source.encode(english_sentences)) == english_sentences
    assert target.decode(target.encode(spanish_sentences)) == spanish_sentences
    assert source.model_proto != target.model_proto
    # Characters only Spanish uses (e.g. "é") are unknown to the source side.
    spanish_only = sorted(
        set("".join(spanish_sentences)) - set("".join(english_sentences))
    )
    assert spanish_only
    assert all(UNK_ID in row for row in source.encode(spanish_only))


def test_kwargs_reach_the_trainer(english_sentences, spanish_sentences):
    source, target = build_vocabularies(
        english_sentences,
        spanish_sentences,
        60,
        shared=False,
        model_type="unigram",
        max_sentences=100,
    )
    assert source.vocab_size <= 60 and target.vocab_size <= 60
    with pytest.raises(ValueError, match="model_type"):
        build_vocabularies(english_sentences, spanish_sentences, 60, model_type="char")


def test_save_load_shared(shared, english_sentences, tmp_path):
    source, target = shared
    manifest_path = save_vocabularies(str(tmp_path), source, target)
    assert manifest_path == str(tmp_path / MANIFEST_FILE)
    assert sorted(os.listdir(tmp_path)) == ["shared.model", MANIFEST_FILE]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["shared"] is True
    assert manifest["source"] == {
        "file": "shared.model",
        "vocab_size": source.vocab_size,
    }
    assert manifest["special_ids"] == {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    loaded_source, loaded_target = load_vocabularies(str(tmp_path))
    assert loaded_source is loaded_target
    assert loaded_source.model_proto == source.model_proto
    assert loaded_source.encode(english_sentences) == source.encode(english_sentences)


def test_save_load_separate(separate, english_sentences, spanish_sentences, tmp_path):
    source, target = separate
    save_vocabularies(str(tmp_path / "vocab"), source, target)
    assert sorted(os.listdir(tmp_path / "vocab")) == [
        "source.model",
        "target.model",
        MANIFEST_FILE,
    ]
    loaded_source, loaded_target = load_vocabularies(str(tmp_path / "vocab"))
    assert loaded_source is not loaded_target
    assert loaded_source.encode(english_sentences) == source.encode(english_sentences)
    assert loaded_target.encode(spanish_sentences) == target.encode(spanish_sentences)


def test_load_errors_name_the_file(separate, tmp_path):
    with pytest.raises(
        ValueError, match=f"manifest not found: {tmp_path / MANIFEST_FILE}"
    ):
        load_vocabularies(str(tmp_path))
    save_vocabularies(str(tmp_path), *separate)
    manifest_path = tmp_path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())

    (tmp_path / "target.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=str(tmp_path / "target.model")):
        load_vocabularies(str(tmp_path))
    os.remove(tmp_path / "target.model")
    with pytest.raises(ValueError, match=f"not found: {tmp_path / 'target.model'}"):
        load_vocabularies(str(tmp_path))

    manifest_path.write_text("{ not json")
    with pytest.raises(
        ValueError, match=f"Corrupted vocabulary manifest {manifest_path}"
    ):
        load_vocabularies(str(tmp_path))
    manifest["source"]["vocab_size"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="records source vocab_size"):
        load_vocabularies(str(tmp_path))
    manifest["source"]["file"] = "../elsewhere.model"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="plain file name"):
        load_vocabularies(str(tmp_path))


def test_save_rejects_non_tokenizers(shared, tmp_path):
    with pytest.raises(TypeError, match="target_tokenizer"):
        save_vocabularies(str(tmp_path), shared[0], b"proto")
