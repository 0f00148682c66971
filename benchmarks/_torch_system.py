"""`torch.nn.Transformer` with its own embedding, sinusoidal PE and tied output."""

import math

import numpy as np
import torch
from _common import CONFIG
from torch import nn


def sinusoidal_table(length, d_model, max_wavelength=10000.0):
    """`(length, d_model)` float32: sin on even, cos on odd dims (interleaved)."""
    positions = np.arange(length, dtype=np.float64)[:, None]
    frequencies = max_wavelength ** (-2.0 * (np.arange(d_model) // 2) / d_model)
    angles = positions * frequencies[None, :]
    table = np.where(np.arange(d_model) % 2 == 0, np.sin(angles), np.cos(angles))
    return torch.tensor(table, dtype=torch.float32)


class TorchTransformer(nn.Module):
    """Embedding * sqrt(d) + PE -> nn.Transformer (post-LN) -> tied output.

    Note: `nn.Transformer` always adds a final LayerNorm after each stack, and
    its dropout also applies to attention weights and inside the FFN.
    """

    def __init__(self, config=CONFIG, max_positions=1024):
        super().__init__()
        d = config["d_model"]
        self.d_model = d
        self.pad_id = config["pad_id"]
        self.embedding = nn.Embedding(config["vocabulary_size"], d)
        nn.init.normal_(self.embedding.weight, std=d**-0.5)
        self.register_buffer("position", sinusoidal_table(max_positions, d))
        self.dropout = nn.Dropout(config["dropout"])
        self.transformer = nn.Transformer(
            d_model=d,
            nhead=config["num_heads"],
            num_encoder_layers=config["num_layers"],
            num_decoder_layers=config["num_layers"],
            dim_feedforward=config["d_ff"],
            dropout=config["dropout"],
            batch_first=True,
            norm_first=False,
            layer_norm_eps=1e-6,
        )

    def embed(self, ids):
        """Token embeddings x sqrt(d) + sinusoidal positions, then dropout."""
        x = self.embedding(ids) * math.sqrt(self.d_model)
        return self.dropout(x + self.position[: ids.shape[1]])

    def encode(self, source):
        """The encoder stack's output for `source` ids (padding masked)."""
        return self.transformer.encoder(
            self.embed(source), src_key_padding_mask=source == self.pad_id
        )

    def decode(self, target, memory, source):
        """Logits of the causal decoder over `target`, attending to `memory`."""
        length = target.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        x = self.transformer.decoder(
            self.embed(target),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            tgt_key_padding_mask=target == self.pad_id,
            memory_key_padding_mask=source == self.pad_id,
        )
        return x @ self.embedding.weight.t()  # tied output projection

    def forward(self, source, target):
        return self.decode(target, self.encode(source), source)


def setup(threads=2, seed=0):
    """Sets torch's intra-op threads and seed."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def make_train_step(model, config=CONFIG):
    """A training step function: Adam, cross-entropy ignoring padding."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    loss_fn = nn.CrossEntropyLoss(ignore_index=config["pad_id"])

    def train_step(source, target_in, target_out):
        optimizer.zero_grad(set_to_none=True)
        logits = model(source, target_in)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), target_out.reshape(-1))
        loss.backward()
        optimizer.step()
        return float(loss)

    return train_step


def torch_batch(batch):
    """A `_common.pad_batch` dict -> `(source, target_in, target_out)` int64."""
    return tuple(
        torch.from_numpy(np.ascontiguousarray(batch[k], dtype=np.int64))
        for k in ("source", "target_in", "target_out")
    )


@torch.inference_mode()
def greedy_recompute(model, source, new_tokens, config=CONFIG):
    """Greedy search re-running the decoder on the whole prefix each step."""
    memory = model.encode(source)
    tokens = torch.full((source.shape[0], 1), config["bos_id"], dtype=torch.long)
    for _ in range(new_tokens):
        logits = model.decode(tokens, memory, source)[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:]
