"""Greedy search, beam search and sampling with a fixed-size key/value cache,
compiled with XLA."""

from keras_transformer.decoding.beam import beam_search
from keras_transformer.decoding.generation import generate
from keras_transformer.decoding.generation import search_function
from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.decoding.sampling import sampled_search
