"""Public Keras layers of keras_transformer."""

from keras_transformer.layers.decoder import Decoder
from keras_transformer.layers.decoder_block import DecoderBlock
from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.encoder import Encoder
from keras_transformer.layers.encoder_block import EncoderBlock
from keras_transformer.layers.learned_positional_embedding import (
    LearnedPositionalEmbedding,
)
from keras_transformer.layers.multi_head_attention import MultiHeadAttention
from keras_transformer.layers.positionwise_feed_forward import PositionwiseFeedForward
from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)
from keras_transformer.layers.token_embedding import TokenEmbedding

__all__ = [
    "Decoder",
    "DecoderBlock",
    "Dropout",
    "Encoder",
    "EncoderBlock",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
]
