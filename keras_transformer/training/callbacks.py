"""Training callbacks: sacreBLEU on validation data, a wall-clock budget."""

import time

import keras
import sacrebleu


class BleuCallback(keras.callbacks.Callback):
    """Translates validation sentences at epoch end and logs sacreBLEU/chrF.

    The scores go into the epoch's `logs` (so `ModelCheckpoint`,
    `EarlyStopping`, `TensorBoard` and `CSVLogger` see them) under
    `log_key` and `log_key` with `bleu` replaced by `chrf`. BLEU is corpus
    sacreBLEU on detokenized text; its signature is kept in `.signature`.

    Args:
        translate_fn: callable, list of source strings -> list of strings.
        sources: list of source strings.
        references: list of reference translations.
        every_n_epochs: int.
        log_key: str. Defaults to `"val_bleu"`.

    Attributes:
        history: list of `(epoch, bleu, chrf)`.
        signature: the sacreBLEU signature string.
    """

    def __init__(
        self, translate_fn, sources, references, every_n_epochs=1, log_key="val_bleu"
    ):
        super().__init__()
        if len(sources) != len(references):
            raise ValueError(
                f"{len(sources)} sources but {len(references)} references."
            )
        self.translate_fn = translate_fn
        self.sources = list(sources)
        self.references = list(references)
        self.every_n_epochs = every_n_epochs
        self.log_key = log_key
        self.history = []
        self.signature = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        hypotheses = self.translate_fn(self.sources)
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(hypotheses, [self.references]).score
        chrf_score = chrf.corpus_score(hypotheses, [self.references]).score
        self.signature = str(bleu.get_signature())
        self.history.append((epoch, bleu_score, chrf_score))
        if logs is not None:
            logs[self.log_key] = bleu_score
            logs[self.log_key.replace("bleu", "chrf")] = chrf_score


class WallClockLimit(keras.callbacks.Callback):
    """Stops training cleanly once `max_minutes` of wall time have passed.

    Checked after every batch; the current epoch ends early and `fit`
    returns normally, so everything after it (saving, export) still runs.
    Like fairseq's `--stop-time-hours`.

    Args:
        max_minutes: float.

    Attributes:
        stopped_early: bool, whether the budget ran out.
    """

    def __init__(self, max_minutes):
        super().__init__()
        if max_minutes <= 0:
            raise ValueError(f"`max_minutes` must be positive. Received: {max_minutes}")
        self.max_minutes = max_minutes
        self.stopped_early = False
        self._deadline = None

    def on_train_begin(self, logs=None):
        self._deadline = time.monotonic() + 60.0 * self.max_minutes

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() >= self._deadline:
            self.stopped_early = True
            self.model.stop_training = True
