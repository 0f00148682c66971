"""Training callbacks: sacreBLEU on validation data, a wall-clock budget."""

import time

import keras
import sacrebleu


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@keras.saving.register_keras_serializable(package="keras_transformer")
class BleuCallback(keras.callbacks.Callback):
    """Translates validation sentences at epoch end and logs sacreBLEU and chrF.

    Every `every_n_epochs` epochs, `translate_fn(sources)` is compared with
    `references` by corpus-level `sacrebleu.metrics.BLEU()` and
    `sacrebleu.metrics.CHRF()` (default settings, `tokenize=bleu_tokenize` for
    BLEU; pass detokenized text). The scores (0-100) are written into the
    epoch's `logs` under `log_key` and `chrf_log_key`, so callbacks that come
    *after* this one in the `callbacks` list (`ModelCheckpoint(monitor=
    "val_bleu", mode="max")`, `EarlyStopping`, `TensorBoard`, `CSVLogger`) and
    the returned `History` see them. On epochs that are skipped the keys are
    absent from `logs`.

    Args:
        translate_fn: callable, list of source strings -> list of hypothesis
            strings (same length; bytes are decoded as UTF-8).
        sources: list of source strings.
        references: list of reference translations, one per source.
        every_n_epochs: int >= 1, score after epochs `n, 2n, ...`.
            Defaults to `1`.
        log_key: str, the BLEU key in `logs`. Defaults to `"val_bleu"`.
        chrf_log_key: str or `None`, the chrF key in `logs`. Defaults to
            `None`: `log_key` with `bleu` replaced by `chrf` (`"val_chrf"`),
            or `log_key + "_chrf"` when it has no `bleu`.
        bleu_tokenize: str, sacreBLEU's BLEU tokenizer (`"13a"`, `"intl"`,
            `"char"`, `"zh"`, `"ja-mecab"`, `"none"`, ...). `"char"` suits
            languages whose words are long compounds. Defaults to `"13a"`
            (sacreBLEU's default).

    Attributes:
        history: list of dicts `{"epoch", "bleu", "chrf"}`, one per scoring.
        signature: the sacreBLEU BLEU signature string of the last scoring
            (e.g. `"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:..."`).
        chrf_signature: the chrF signature string.

    Example:

    ```python
    import keras
    from keras_transformer import Transformer
    from keras_transformer.data import demo_pairs, make_dataset
    from keras_transformer.evaluation import translate_all
    from keras_transformer.export import Translator
    from keras_transformer.text import SubwordTokenizer, train_sentencepiece
    from keras_transformer.training import BleuCallback, LabelSmoothedCrossEntropy

    pairs = demo_pairs("valid")  # English -> German number words
    tokenizer = SubwordTokenizer(
        train_sentencepiece([text for pair in pairs for text in pair], 60)
    )
    train_data = make_dataset(pairs, tokenizer.tokenize, tokenizer.tokenize,
                              batch_size=32, repeat=True)
    model = Transformer(vocabulary_size=tokenizer.vocab_size, num_layers=1,
                        d_model=16, num_heads=2, d_ff=32)
    model.compile(optimizer="adam", loss=LabelSmoothedCrossEntropy(),
                  run_eagerly=True)  # two steps: not worth tracing a graph

    translator = Translator(model, tokenizer, tokenizer, beam_size=1)
    sources, references = zip(*list(pairs)[:8])
    bleu = BleuCallback(lambda sentences: translate_all(translator, sentences),
                        sources, references)
    model.fit(
        train_data,
        epochs=2,
        steps_per_epoch=1,
        callbacks=[
            bleu,  # before the callbacks that read `val_bleu`
            keras.callbacks.ModelCheckpoint(
                "best.weights.h5", monitor="val_bleu", mode="max",
                save_best_only=True, save_weights_only=True,
            ),
        ],
    )
    print(bleu.history)  # [{"epoch": 0, "bleu": ..., "chrf": ...}, ...]
    ```

    References:
        - [Post, 2018](https://aclanthology.org/W18-6319/), sacreBLEU.
        - [Popović, 2015](https://aclanthology.org/W15-3049/), chrF.
    """

    def __init__(
        self,
        translate_fn,
        sources,
        references,
        every_n_epochs=1,
        log_key="val_bleu",
        chrf_log_key=None,
        bleu_tokenize="13a",
    ):
        super().__init__()
        if not callable(translate_fn):
            raise ValueError(
                f"`translate_fn` must be callable. Received: {translate_fn!r}"
            )
        sources, references = list(sources), list(references)
        if len(sources) != len(references):
            raise ValueError(
                "`sources` and `references` must have the same length. Received: "
                f"{len(sources)} sources and {len(references)} references."
            )
        if not sources:
            raise ValueError("`sources` must not be empty. Received: []")
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise ValueError(
                "`every_n_epochs` must be an integer >= 1. "
                f"Received: every_n_epochs={every_n_epochs!r}"
            )
        if chrf_log_key is None:
            chrf_log_key = (
                log_key.replace("bleu", "chrf")
                if "bleu" in log_key
                else f"{log_key}_chrf"
            )
        if chrf_log_key == log_key:
            raise ValueError(
                "`chrf_log_key` must differ from `log_key`. Received: "
                f"log_key={log_key!r}, chrf_log_key={chrf_log_key!r}"
            )
        try:
            sacrebleu.metrics.BLEU(tokenize=bleu_tokenize)
        except Exception as error:  # sacrebleu raises RuntimeError, KeyError...
            raise ValueError(
                "`bleu_tokenize` must be a sacreBLEU tokenizer name. Received: "
                f"bleu_tokenize={bleu_tokenize!r} ({error})"
            ) from error
        self.translate_fn = translate_fn
        self.sources = [_text(s) for s in sources]
        self.references = [_text(r) for r in references]
        self.every_n_epochs = every_n_epochs
        self.log_key = log_key
        self.chrf_log_key = chrf_log_key
        self.bleu_tokenize = bleu_tokenize
        self.history = []
        self.signature = None
        self.chrf_signature = None

    def score(self):
        """Translates `sources` and returns `(bleu, chrf)` corpus scores."""
        hypotheses = [_text(h) for h in self.translate_fn(list(self.sources))]
        if len(hypotheses) != len(self.references):
            raise ValueError(
                "`translate_fn` must return one hypothesis per source. Received: "
                f"{len(hypotheses)} hypotheses for {len(self.sources)} sources."
            )
        bleu = sacrebleu.metrics.BLEU(tokenize=self.bleu_tokenize)
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(hypotheses, [self.references]).score
        chrf_score = chrf.corpus_score(hypotheses, [self.references]).score
        self.signature = str(bleu.get_signature())
        self.chrf_signature = str(chrf.get_signature())
        return float(bleu_score), float(chrf_score)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        bleu, chrf = self.score()
        self.history.append({"epoch": epoch, "bleu": bleu, "chrf": chrf})
        if logs is not None:
            logs[self.log_key] = bleu
            logs[self.chrf_log_key] = chrf

    def get_config(self):
        return {
            "translate_fn": self.translate_fn,
            "sources": list(self.sources),
            "references": list(self.references),
            "every_n_epochs": self.every_n_epochs,
            "log_key": self.log_key,
            "chrf_log_key": self.chrf_log_key,
            "bleu_tokenize": self.bleu_tokenize,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["translate_fn"], dict):
            # A function serialized by `keras.saving.serialize_keras_object`.
            config["translate_fn"] = keras.saving.deserialize_keras_object(
                config["translate_fn"]
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_transformer")
class WallClockLimit(keras.callbacks.Callback):
    """Stops training cleanly once `max_minutes` of wall time have passed.

    The clock starts at `on_train_begin` and is checked at the end of every
    training batch (every `steps_per_execution` steps when that is above 1).
    When the budget is spent it sets `model.stop_training = True`: the current
    epoch ends after that batch and `fit` returns normally (epoch-end
    callbacks and validation still run for that epoch), so what follows `fit`
    (saving, export) still happens. Like fairseq's `--stop-time-hours`.

    Args:
        max_minutes: float > 0, the training-time budget in minutes.
        restart_each_fit: bool, start the clock anew at every `fit` (default);
            `False`: at the first one only, for a budget spanning several
            `fit` calls.

    Attributes:
        stopped_early: bool, whether the budget ran out in the last `fit`.
        elapsed_minutes: float, minutes since `on_train_begin` at the last
            check.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_transformer.training import WallClockLimit

    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")

    limit = WallClockLimit(max_minutes=0.01)  # 0.6 seconds
    model.fit(x, y, epochs=1000, callbacks=[limit], verbose=0)
    print(limit.stopped_early)  # True: it stopped long before epoch 1000
    ```
    """

    def __init__(self, max_minutes, restart_each_fit=True):
        super().__init__()
        if isinstance(max_minutes, bool) or not max_minutes > 0:
            raise ValueError(
                f"`max_minutes` must be a positive number. Received: {max_minutes!r}"
            )
        self.max_minutes = max_minutes
        self.restart_each_fit = restart_each_fit
        self.stopped_early = False
        self.elapsed_minutes = 0.0
        self._start = None

    def on_train_begin(self, logs=None):
        if self._start is not None and not self.restart_each_fit:
            return
        self._start = time.monotonic()
        self.stopped_early = False
        self.elapsed_minutes = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            self._start = time.monotonic()
        self.elapsed_minutes = (time.monotonic() - self._start) / 60.0
        if self.elapsed_minutes >= self.max_minutes:
            self.stopped_early = True
            self.model.stop_training = True

    def get_config(self):
        return {
            "max_minutes": self.max_minutes,
            "restart_each_fit": self.restart_each_fit,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
