"""Training: loss, metrics, schedule, strategies, checkpoints, callbacks, trainer.

- `LabelSmoothedCrossEntropy`, `label_smoothed_cross_entropy`: pad-aware
  label-smoothed loss (token mean, float32, global across replicas);
  `token_cross_entropy`: its per-token values from a log-sum-exp (with a
  written-out gradient outside XLA).
- `MaskedAccuracy`, `MaskedPerplexity`: pad-aware token metrics.
- `TransformerSchedule`, `transformer_optimizer`: the paper's learning rate
  and Adam(0.9, 0.98, 1e-9).
- `get_strategy`: TPU / mirrored / multi-worker / default `tf.distribute`
  strategies, failing fast when the hardware is absent.
- `fit_custom_loop`: a `strategy.run` training loop with resumable
  checkpoints, for multi-worker training (where Keras 3's `fit` fails).
- `average_checkpoints`, `latest_checkpoints`, `list_step_checkpoints`:
  checkpoint listing and averaging.
- `BleuCallback`, `WallClockLimit`: sacreBLEU/chrF at epoch end, a time budget.
- `TrainConfig`, `train_translator` (in `keras_transformer.training.trainer`):
  what `keras-transformer train` runs. `TrainConfig` is declared in
  `keras_transformer.training.config`, one field per setting with its help
  text, command-line flag and resume-compatibility flag.
"""

from keras_transformer.lazy_imports import lazy_exports

# Public name: the module defining it. Imported on first use, so that
# `keras_transformer.training.config` (the command line's settings) loads
# without TensorFlow.
_EXPORTS = {
    "BleuCallback": "callbacks",
    "WallClockLimit": "callbacks",
    "average_checkpoints": "checkpoints",
    "checkpoint_step": "checkpoints",
    "latest_checkpoints": "checkpoints",
    "list_step_checkpoints": "checkpoints",
    "fit_custom_loop": "custom_loop",
    "LabelSmoothedCrossEntropy": "losses",
    "label_smoothed_cross_entropy": "losses",
    "token_cross_entropy": "losses",
    "MaskedAccuracy": "metrics",
    "MaskedPerplexity": "metrics",
    "TransformerSchedule": "schedules",
    "transformer_optimizer": "schedules",
    "STRATEGY_NAMES": "strategy",
    "get_strategy": "strategy",
    "local_tpu_evidence": "strategy",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
