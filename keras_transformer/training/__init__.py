"""Training: loss, metric, schedule, callbacks and the end-to-end trainer.

- `LabelSmoothedCrossEntropy`, `MaskedAccuracy`: pad-aware loss and metric.
- `TransformerSchedule`, `transformer_optimizer`: the paper's learning rate
  and Adam(0.9, 0.98, 1e-9).
- `BleuCallback`, `WallClockLimit`: sacreBLEU at epoch end, a time budget.
- `TrainConfig`, `train_translator` (in `keras_transformer.training.trainer`):
  what `keras-transformer train` runs.
"""

from keras_transformer.training.callbacks import BleuCallback
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.losses import label_smoothed_cross_entropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.schedules import TransformerSchedule
from keras_transformer.training.schedules import transformer_optimizer
