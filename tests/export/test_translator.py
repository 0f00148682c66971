import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from num2words import num2words

from keras_transformer import Transformer
from keras_transformer.export import Translator
from keras_transformer.export import export_translator
from keras_transformer.export.saved_model import WARMUP_FILE

SENTENCES = ["four hundred and two", "seventy", "one thousand and one", "", "nine"]

# SentencePiece/tf-text kernels linked into stock TF Serving (tf-text's
# ops_lib since 2019; see shared/reference/peers.md section (e)).
SERVING_TEXT_OPS = {
    "SentencepieceOp",
    "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp",
    "SentencepieceDetokenizeOp",
    "SentencepieceVocabSizeOp",
    "SentencepieceIdToStringOp",
    "SentencepieceStringToIdOp",
}
FILE_OPS = {"ReadFile", "WriteFile", "PrintV2", "Print", "SaveV2", "RestoreV2",
            "MatchingFiles", "MergeV2Checkpoints", "ImmutableConst"}  # fmt: skip


@pytest.fixture(scope="module")
def translator(tokenizer):
    model = Transformer(vocabulary_size=tokenizer.vocab_size, num_layers=1,
                        d_model=32, num_heads=2, d_ff=64)  # fmt: skip
    return Translator(model, tokenizer, tokenizer, beam_size=2, max_input_tokens=16,
                      max_extra_length=6)  # fmt: skip


@pytest.fixture(scope="module")
def exported(translator, tmp_path_factory):
    return export_translator(translator, tmp_path_factory.mktemp("export"))


def test_versioned_layout_and_warmup(exported):
    assert os.path.basename(exported) == "1"
    assert os.path.exists(os.path.join(exported, "saved_model.pb"))
    records = list(tf.data.TFRecordDataset(os.path.join(exported, WARMUP_FILE)))
    assert 0 < len(records) <= 1000


def test_signatures(exported):
    loaded = tf.saved_model.load(exported)
    assert {"serving_default", "translate_greedy"} <= set(loaded.signatures)
    for name in ("serving_default", "translate_greedy"):
        function = loaded.signatures[name]
        spec = function.structured_input_signature[1]["sentences"]
        assert spec.dtype == tf.string and spec.shape.as_list() == [None]
        outputs = function.structured_outputs
        assert outputs["translations"].dtype == tf.string
        assert outputs["translations"].shape.as_list() == [None]
        assert outputs["scores"].dtype == tf.float32


def test_saved_model_cli_show(exported):
    result = subprocess.run(
        ["saved_model_cli", "show", "--dir", exported, "--all"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert re.search(
        r"inputs\['sentences'\].*\n\s*dtype: DT_STRING\n\s*shape: \(-1\)", text
    )
    assert re.search(r"outputs\['translations'\].*\n\s*dtype: DT_STRING", text)
    assert "tensorflow/serving/predict" in text


def test_the_serving_readme_check_runs(exported):
    # The offline check examples/serving/README.md documents, as written.
    readme = os.path.join(
        os.path.dirname(__file__), "..", "..", "examples", "serving", "README.md"
    )
    with open(readme, encoding="utf-8") as file:
        (line,) = [x for x in file.read().splitlines() if x.startswith("python -c")]
    command = [
        exported if arg == "export/translator/1" else arg for arg in shlex.split(line)
    ]
    command[0] = sys.executable
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\[b(['\"]).*\1\]", result.stdout.strip())


def _signature_ops(function):
    graph_def = function.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        ops |= {node.op for node in library_function.node_def}
    return ops


def test_ops_are_core_or_serving_text_ops_and_touch_no_files(exported):
    import tensorflow_text  # noqa: F401  (registers the ops)

    loaded = tf.saved_model.load(exported)
    ops = set()
    for name in ("serving_default", "translate_greedy"):
        ops |= _signature_ops(loaded.signatures[name])
    core = set(dir(tf.raw_ops))
    unknown = {op for op in ops if op not in core and op not in SERVING_TEXT_OPS}
    assert not unknown, unknown
    # No XLA-only kernels: outside XLA the caches are written in place by
    # the core InplaceUpdate op.
    assert not {op for op in ops if op.startswith("Xla")}
    assert "InplaceUpdate" in ops
    assert not ops & FILE_OPS
    assert ops & SERVING_TEXT_OPS  # the tokenizer runs in the graph


def test_fresh_process_with_only_tensorflow_and_tf_text(translator, exported):
    # The script imports tensorflow and tensorflow_text only (`import
    # tensorflow` itself loads keras in TF 2.21); keras_transformer never loads.
    expected = translator.translate(tf.constant(SENTENCES))
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text
        loaded = tf.saved_model.load({exported!r})
        out = loaded.signatures["serving_default"](
            sentences=tf.constant({SENTENCES!r}))
        print(json.dumps({{
            "translations": [t.decode() for t in out["translations"].numpy()],
            "scores": out["scores"].numpy().tolist(),
            "modules": sorted(m for m in sys.modules
                              if m.split(".")[0] == "keras_transformer"),
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["modules"] == []
    assert out["translations"] == [t.decode() for t in expected["translations"].numpy()]
    np.testing.assert_allclose(out["scores"], expected["scores"], atol=1e-5)


def test_loading_without_tf_text_fails_clearly(exported):
    script = f"import tensorflow as tf; tf.saved_model.load({exported!r})"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "Op type not registered 'Sentencepiece" in result.stderr


def test_bad_inputs(translator):
    long_line = " ".join(["seven"] * 10_000)
    batch = [
        "",
        "   ",
        b"\xff\xfe seven \xc3".decode("utf-8", "surrogateescape"),
        long_line,
    ]
    raw = tf.constant([b"", b"   ", b"\xff\xfe seven \xc3", long_line.encode()])
    outputs = translator.translate(raw)
    translations = outputs["translations"].numpy()
    assert translations[0] == b"" and translations[1] == b""
    assert len(translations) == len(batch)
    assert np.all(np.isfinite(outputs["scores"].numpy()))
    # Invalid UTF-8 and the 10,000-word line give ordinary, valid strings.
    for text in translations:
        text.decode("utf-8")


def test_truncation_keeps_max_input_tokens(translator, tokenizer):
    source_ids, _ = translator._encode(tf.constant([" ".join(["seven"] * 10_000)]))
    assert source_ids.shape[1] == 16
    assert int(source_ids[0, -1]) == 3  # EOS kept after truncation


def test_batch_of_1000(translator):
    sentences = [num2words(n) for n in range(1000)]
    outputs = translator.translate_greedy(tf.constant(sentences))
    assert outputs["translations"].shape == (1000,)


def test_greedy_signature_equals_model_generate(translator):
    source_ids, _ = translator._encode(tf.constant(SENTENCES[:3]))
    ids = translator.model.generate(
        source_ids, max_length=int(source_ids.shape[1]) + 6, jit_compile=False
    )
    expected = translator.target_tokenizer.detokenize(ids).numpy()
    actual = translator.translate_greedy(tf.constant(SENTENCES[:3]))["translations"]
    assert list(actual.numpy()) == list(expected)


def _load_example(name):
    import importlib.util

    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "examples", "serving", name
    )
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serving_clients_build_requests_the_signature_accepts(translator, exported):
    grpc_client = _load_example("grpc_client.py")
    rest_client = _load_example("rest_client.py")
    request = grpc_client.predict_request(SENTENCES, signature="translate_greedy")
    assert request.model_spec.signature_name == "translate_greedy"
    loaded = tf.saved_model.load(exported)
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = loaded.signatures["translate_greedy"](**inputs)
    expected = translator.translate_greedy(tf.constant(SENTENCES))["translations"]
    assert list(outputs["translations"].numpy()) == list(expected.numpy())
    body = rest_client.predict_request(SENTENCES)
    assert json.loads(json.dumps(body)) == {
        "signature_name": "serving_default",
        "instances": SENTENCES,
    }
