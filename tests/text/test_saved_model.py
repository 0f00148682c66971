"""The tokenizer inside a SavedModel: self-contained, and loadable with only
tensorflow + tensorflow_text (what TF Serving links), giving the same ids."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

# SentencePiece ops linked into the stock tensorflow_model_server
# (tensorflow_text:ops_lib, tf-text 2.12.1 and 2.20.0).
SERVING_SENTENCEPIECE_OPS = {
    "SentencepieceOp",
    "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp",
    "SentencepieceDetokenizeOp",
    "SentencepieceVocabSizeOp",
    "SentencepieceIdToStringOp",
    "SentencepieceStringToIdOp",
}

SENTENCES = ["nine hundred and two", "", "forty-one thousand, seven", "one \udcff two"]

LOAD_SCRIPT = r"""
import json, sys
import tensorflow as tf
try:
    tf.saved_model.load(sys.argv[1])
    unregistered = None
except Exception as error:  # Ops are unknown until tensorflow_text is imported.
    unregistered = str(error)
import tensorflow_text  # noqa: F401  Registers the SentencePiece kernels.
model = tf.saved_model.load(sys.argv[1])
tf.random.set_seed(0)  # Clears the eager kernel cache; must not matter.
text = tf.constant([s.encode("utf-8", "surrogateescape") for s in json.loads(sys.argv[2])])
tokenized = model.signatures["serving_default"](text=text)
ids = tf.RaggedTensor.from_tensor(tokenized["ids"], lengths=tokenized["lengths"])
rows = tf.constant(json.loads(sys.argv[3]), tf.int32)
detokenized = model.signatures["detokenize"](ids=rows)["text"]
print(json.dumps({
    "unregistered": unregistered,
    "ids": ids.to_list(),
    "text": [t.decode("utf-8") for t in detokenized.numpy().tolist()],
    "keras_transformer_imported": any(m.startswith("keras_transformer") for m in sys.modules),
}))
"""


class Exported(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tokenize(self, text):
        ids = self.tokenizer.tokenize(text)
        return {
            "ids": ids.to_tensor(default_value=PAD_ID),
            "lengths": ids.row_lengths(),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
    def detokenize(self, ids):
        return {"text": self.tokenizer.detokenize(ids)}


def _saved_ops(export_dir):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    (meta_graph,) = saved_model.meta_graphs
    nodes = list(meta_graph.graph_def.node)
    for function in meta_graph.graph_def.library.function:
        nodes += list(function.node_def)
    return nodes


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    module = Exported(tokenizer)
    export_dir = str(tmp_path_factory.mktemp("export") / "translator")
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.tokenize,
            "detokenize": module.detokenize,
        },
    )
    return export_dir


def test_saved_graph_ops_and_embedded_proto(exported, tokenizer):
    nodes = _saved_ops(exported)
    ops = {node.op for node in nodes}
    sentencepiece_ops = {op for op in ops if "entencepiece" in op or "TFText" in op}
    assert sentencepiece_ops == {
        "SentencepieceOp",
        "SentencepieceTokenizeOp",
        "SentencepieceDetokenizeOp",
    }
    assert sentencepiece_ops <= SERVING_SENTENCEPIECE_OPS
    # The model proto is an attribute of SentencepieceOp: no asset file.
    # (One node in the top-level graph for TF1-style loaders such as TF
    # Serving, one in the resource's creator function.)
    resource_ops = [node for node in nodes if node.op == "SentencepieceOp"]
    assert resource_ops
    for node in resource_ops:
        assert node.attr["model"].s == tokenizer.model_proto
        assert node.attr["shared_name"].s.startswith(
            b"keras_transformer_sentencepiece_"
        )
    assets = os.path.join(exported, "assets")
    assert not os.path.exists(assets) or not os.listdir(assets)


def test_reload_with_only_tensorflow_text(exported, tokenizer, tmp_path):
    # Move the export so nothing can point back at the original location.
    moved = str(tmp_path / "moved")
    shutil.copytree(exported, moved)
    rows = [
        [*tokenizer.encode(["nine two"])[0], EOS_ID, PAD_ID],
        [2, 5, EOS_ID, 9, 9, 9],
    ]
    width = max(len(row) for row in rows)
    rows = [row + [PAD_ID] * (width - len(row)) for row in rows]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            moved,
            json.dumps(SENTENCES),
            json.dumps(rows),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),  # Not the repository root.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Op type not registered 'Sentencepiece" in output["unregistered"]
    assert output["keras_transformer_imported"] is False
    strings = tf.constant([s.encode("utf-8", "surrogateescape") for s in SENTENCES])
    assert output["ids"] == tokenizer.tokenize(strings).to_list()
    expected_text = tokenizer.detokenize(tf.constant(rows)).numpy().tolist()
    assert output["text"] == [t.decode("utf-8") for t in expected_text]
    assert output["text"][0] == "nine two"
