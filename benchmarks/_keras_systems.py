"""The two Keras systems: ours (`keras_transformer`) and a keras-hub model.

Both train with `model.compile(Adam, SparseCategoricalCrossentropy(
from_logits=True, ignore_class=pad))` and `train_on_batch`, so the training
loop (and its per-step overhead) is Keras' own, identical for both. The rows
marked "our loss" train ours with the library's loss on the same objective
instead (`LabelSmoothedCrossEntropy(label_smoothing=0.0)`).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from _common import CONFIG
from _common import DECODE
from keras import ops


def compile_for_training(model, jit_compile, config=CONFIG, loss="keras"):
    """Adam (the configuration's learning rate) and a masked cross-entropy
    from logits: Keras's (`loss="keras"`, every system's default) or the
    library's on the same objective (`"ours"`: no label smoothing, token
    mean over the non-pad targets)."""
    if loss == "keras":
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=config["pad_id"]
        )
    elif loss == "ours":
        from keras_transformer.training import LabelSmoothedCrossEntropy

        loss = LabelSmoothedCrossEntropy(label_smoothing=0.0, pad_id=config["pad_id"])
    else:
        raise ValueError(f"loss must be 'keras' or 'ours'. Received: loss={loss!r}")
    optimizer = keras.optimizers.Adam(config["learning_rate"])
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile)


def build_for_training(task):
    """The Keras model of a `_worker.py` task, compiled: keras-hub's if
    `task["system"]` is `keras_hub`, else ours; `task["jit"]`, and the
    optional `"dtype"` (policy, default float32) and `"loss"` (default keras)."""
    keras.config.set_dtype_policy(task.get("dtype", "float32"))
    model = build_keras_hub() if task["system"] == "keras_hub" else build_ours()
    compile_for_training(model, task["jit"], loss=task.get("loss", "keras"))
    return model


def keras_inputs(batch):
    """numpy batch -> `(x, y)` TF tensors for `train_on_batch`."""
    source, target = tf.constant(batch["source"]), tf.constant(batch["target_in"])
    return {"source": source, "target": target}, tf.constant(batch["target_out"])


def build_ours(config=CONFIG, **overrides):
    """Our `Transformer` for `config` (seeded weights), built."""
    from keras_transformer import Transformer

    keras.utils.set_random_seed(config["seed"])  # same untrained weights each run
    names = ("vocabulary_size", "num_layers", "d_model", "num_heads", "d_ff", "dropout")
    model = Transformer(**{**{k: config[k] for k in names}, **overrides})
    model.build()
    return model


class KerasHubTransformer(keras.Model):
    """An "Attention Is All You Need" model assembled from keras-hub layers.

    Tied `ReversibleEmbedding` x sqrt(d) + `SinePositionEncoding`,
    `TransformerEncoder` / `TransformerDecoder` blocks (post-LN), tied output.
    """

    def __init__(self, config=CONFIG, **kwargs):
        from keras_hub.layers import ReversibleEmbedding
        from keras_hub.layers import SinePositionEncoding
        from keras_hub.layers import TransformerDecoder
        from keras_hub.layers import TransformerEncoder

        super().__init__(**kwargs)
        d = self.d_model = config["d_model"]
        self.num_heads, self.pad_id = config["num_heads"], config["pad_id"]
        self.embedding = ReversibleEmbedding(
            config["vocabulary_size"],
            d,
            tie_weights=True,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d**-0.5),
            name="embedding",
        )
        self.position = SinePositionEncoding(max_wavelength=10000)
        self.source_dropout = keras.layers.Dropout(config["dropout"])
        self.target_dropout = keras.layers.Dropout(config["dropout"])
        block = {
            "intermediate_dim": config["d_ff"],
            "num_heads": config["num_heads"],
            "dropout": config["dropout"],
            "layer_norm_epsilon": 1e-6,
            "normalize_first": False,
        }
        layers = range(config["num_layers"])
        self.encoder_layers = [
            TransformerEncoder(name=f"encoder_{i}", **block) for i in layers
        ]
        self.decoder_layers = [
            TransformerDecoder(name=f"decoder_{i}", **block) for i in layers
        ]

    def embed(self, ids, start_index=0):
        """Token embeddings x sqrt(d) + sinusoidal positions from `start_index`."""
        x = self.embedding(ids) * ops.cast(math.sqrt(self.d_model), self.compute_dtype)
        return x + self.position(x, start_index=start_index)

    def encode(self, source, training=None):
        """The encoder stack's output for `source` ids (padding masked)."""
        mask = ops.not_equal(source, self.pad_id)
        x = self.source_dropout(self.embed(source), training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=mask, training=training)
        return x

    def logits(self, x):
        """float32 logits from the tied (reversed) embedding."""
        return ops.cast(self.embedding(x, reverse=True), "float32")

    def decode(self, target, encoder_outputs, source_mask, training=None):
        """Full (uncached) decoder over `target`; float32 logits."""
        x = self.target_dropout(self.embed(target), training=training)
        mask = ops.not_equal(target, self.pad_id)
        for layer in self.decoder_layers:
            x = layer(
                x,
                encoder_outputs,
                decoder_padding_mask=mask,
                encoder_padding_mask=source_mask,
                training=training,
            )
        return self.logits(x)

    def call(self, inputs, training=None):
        source, target = inputs["source"], inputs["target"]
        encoder_outputs = self.encode(source, training=training)
        source_mask = ops.not_equal(source, self.pad_id)
        return self.decode(target, encoder_outputs, source_mask, training=training)


def build_keras_hub(config=CONFIG):
    """`KerasHubTransformer` for `config` (seeded weights), built."""
    keras.utils.set_random_seed(config["seed"])
    model = KerasHubTransformer(config)
    model({"source": np.ones((1, 4), np.int32), "target": np.ones((1, 3), np.int32)})
    return model


def keras_hub_greedy_cached(model, source, new_tokens, config=CONFIG):
    """Greedy search with self- and cross-attention caches (keras-hub API).

    Step 0 fills the cross-attention caches (`cross_attention_cache_update_index
    =0`, as keras-hub's BART does); steps 1.. reuse them (`None`). Exactly
    `new_tokens` decoder steps, no early stop. For `tf.function(jit_compile=True)`.
    """
    batch_size, source_len = ops.shape(source)[0], ops.shape(source)[1]
    heads, key_dim = model.num_heads, model.d_model // model.num_heads
    encoder_outputs = model.encode(source, training=False)
    source_mask = ops.not_equal(source, model.pad_id)

    def zeros(length):
        shape = (batch_size, 2, length, heads, key_dim)
        return [ops.zeros(shape, model.compute_dtype) for _ in model.decoder_layers]

    def step(ids, index, self_cache, cross_cache, cross_index):
        x = model.embed(ids, start_index=index)
        new_self, new_cross = [], []
        for i, layer in enumerate(model.decoder_layers):
            x, s_cache, c_cache = layer(
                x,
                encoder_outputs,
                encoder_padding_mask=source_mask,
                self_attention_cache=self_cache[i],
                self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache[i],
                cross_attention_cache_update_index=cross_index,
                training=False,
            )
            new_self.append(s_cache)
            new_cross.append(c_cache)
        logits = model.logits(x)[:, -1, :]
        return ops.cast(ops.argmax(logits, axis=-1), "int32"), new_self, new_cross

    tokens = ops.full((batch_size, new_tokens + 1), config["pad_id"], "int32")
    first = ops.full((batch_size, 1), config["bos_id"], "int32")
    next_ids, self_cache, cross_cache = step(
        first, 0, zeros(new_tokens), zeros(source_len), 0
    )
    tokens = ops.slice_update(tokens, (0, 1), next_ids[:, None])

    def body(index, tokens, self_cache):
        ids = ops.slice(tokens, (0, index), (batch_size, 1))
        next_ids, self_cache, _ = step(ids, index, self_cache, cross_cache, None)
        tokens = ops.slice_update(tokens, (0, index + 1), next_ids[:, None])
        return index + 1, tokens, self_cache

    _, tokens, _ = ops.while_loop(
        lambda index, *_: index < new_tokens,
        body,
        (ops.ones((), "int32"), tokens, self_cache),
    )
    return tokens[:, 1:]


def keras_hub_greedy_recompute(model, source, new_tokens, config=CONFIG):
    """Greedy search re-running the decoder on the whole prefix at each step.

    The TensorFlow "Transformer" tutorial's way (a `tf.while_loop` whose
    decoder input grows by one token per step), except that the encoder runs
    once. Dynamic shapes: graph mode, no XLA.
    """
    batch_size = tf.shape(source)[0]
    encoder_outputs = model.encode(source, training=False)
    source_mask = tf.not_equal(source, model.pad_id)
    tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    tokens = tokens.write(0, tf.fill([batch_size], config["bos_id"]))

    def body(index, tokens):
        prefix = tf.transpose(tokens.stack())  # (B, index + 1)
        logits = model.decode(prefix, encoder_outputs, source_mask, training=False)
        next_ids = tf.cast(tf.argmax(logits[:, -1, :], axis=-1), tf.int32)
        return index + 1, tokens.write(index + 1, next_ids)

    _, tokens = tf.while_loop(
        lambda index, tokens: index < new_tokens, body, (tf.constant(0), tokens)
    )
    return tf.transpose(tokens.stack())[:, 1:]


def decoder_step_kernels(model):
    """Our model's weight matrices that one decoding step multiplies by: per
    decoder block the fused self-attention Q/K/V `(d, 3d)`, its output
    `(d, d)`, the cross-attention query and output `(d, d)`, the FFN
    `(d, d_ff)` and `(d_ff, d)`; and the tied output projection `(d, V)`."""
    blocks = [
        tuple(
            tf.convert_to_tensor(dense.kernel)
            for dense in (
                block.self_attention.query_key_value_dense,
                block.self_attention.output_dense,
                block.cross_attention.query_dense,
                block.cross_attention.output_dense,
                block.feed_forward.inner_dense,
                block.feed_forward.output_dense,
            )
        )
        for block in model.decoder.blocks
    ]
    return blocks, tf.convert_to_tensor(model.target_embedding.output_projection())


def matmul_floor(model, rows, new_tokens):
    """The decoding floor: `new_tokens` steps of only the weight matmuls of
    our decoding step (`decoder_step_kernels`, `rows` rows: 16 for greedy,
    64 for beam 4), chained through the residual adds in one XLA while loop
    like `generate()`. No attention, LayerNorm, softmax, embedding, cache
    writes or argmax; one RMS rescaling per step keeps the values normal
    (no denormals). Returns a function of no arguments that runs it.
    """
    blocks, projection = decoder_step_kernels(model)
    d = model.d_model

    def step(x):  # (rows, d)
        for qkv, out, query, cross_out, inner, outer in blocks:
            x = x + tf.matmul(tf.matmul(x, qkv)[:, :d], out)
            x = x + tf.matmul(tf.matmul(x, query), cross_out)
            x = x + tf.matmul(tf.nn.relu(tf.matmul(x, inner)), outer)
        x = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True))
        return x, tf.reduce_max(tf.matmul(x, projection), axis=-1)

    @tf.function(jit_compile=True, autograph=False)
    def run(x):
        def body(index, x, total):
            x, best = step(x)
            return index + 1, x, total + best

        start = (tf.constant(0), x, tf.zeros((rows,)))
        _, _, total = tf.while_loop(lambda i, *_: i < new_tokens, body, start)
        return total

    start = tf.random.stateless_normal((rows, d), seed=(1, 2))
    return lambda: run(start).numpy()


def decode_function(system, source, jit=True, decode=DECODE):
    """A function of no arguments running one decoding call of `system`.

    `system`: `ours_greedy` / `ours_beam` (`model.generate`, beam 1 or
    `decode["beam_size"]`), `keras_hub_cached`, `keras_hub_recompute`, or
    `floor_greedy` / `floor_beam` (`matmul_floor` with as many rows). The
    function returns the generated ids as numpy (the floors: one float per
    row). Builds the model (seeded) but calls nothing.
    """
    new_tokens = decode["new_tokens"]
    beam = decode["beam_size"] if system.endswith("beam") else 1
    if system.startswith("floor_"):
        return matmul_floor(build_ours(), decode["batch_size"] * beam, new_tokens)
    if system.startswith("ours_"):
        model = build_ours()
        return lambda: model.generate(
            source, max_length=new_tokens, beam_size=beam, jit_compile=jit
        ).numpy()
    hub = build_keras_hub()
    if system == "keras_hub_cached":
        search = keras_hub_greedy_cached
    elif system == "keras_hub_recompute":
        search, jit = keras_hub_greedy_recompute, False  # dynamic shapes
    else:
        raise ValueError(f"Unknown decoding system {system!r}")
    function = tf.function(
        lambda s: search(hub, s, new_tokens), jit_compile=jit, autograph=False
    )
    return lambda: function(source).numpy()
