"""Greedy and beam search with a fixed-size key/value cache, compiled with XLA."""

from keras_transformer.decoding.beam_search import beam_search
from keras_transformer.decoding.generate import generate
from keras_transformer.decoding.generate import search_function
from keras_transformer.decoding.greedy_search import greedy_search
