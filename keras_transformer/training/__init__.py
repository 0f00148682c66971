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

from keras_transformer.training.callbacks import BleuCallback
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.checkpoints import average_checkpoints
from keras_transformer.training.checkpoints import checkpoint_step
from keras_transformer.training.checkpoints import latest_checkpoints
from keras_transformer.training.checkpoints import list_step_checkpoints
from keras_transformer.training.custom_loop import fit_custom_loop
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.losses import label_smoothed_cross_entropy
from keras_transformer.training.losses import token_cross_entropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.metrics import MaskedPerplexity
from keras_transformer.training.schedules import TransformerSchedule
from keras_transformer.training.schedules import transformer_optimizer
from keras_transformer.training.strategy import STRATEGY_NAMES
from keras_transformer.training.strategy import get_strategy
from keras_transformer.training.strategy import local_tpu_evidence
