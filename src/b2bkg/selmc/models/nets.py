"""Skim-prediction networks: generator-level particles + decay string -> one logit per skim.

All networks take the dict of :func:`b2bkg.selmc.features.event_features` as torch tensors
(B events, L particles, T decay-string tokens, F particle features) and return logits of shape
(B, S), one per skim (sigmoid = predicted pass probability):

``conv``         seed 003's plain 1D convolutions on both branches.
``resnet``       seed 003's particle branch on both: Conv1D(3, C), AvgPool, three residual
                 "Node(2, 3, C, Avg)" blocks (two k=3 convolutions + skip, then average pooling),
                 global average pool.
``inception``    seed 003's decay-string branch ("N paths") on both: parallel Conv1D of kernel
                 4, 5 and 9, each globally average-pooled, concatenated.
``seed``         the seed's combination: ResNet particle branch + N-paths decay-string branch.
``gnn``          message passing along the mother links of the decay tree (each round adds the
                 mother's state and the mean of the daughters' states), masked mean+max pool.
``transformer``  self-attention over the particles with a learned per-head bias for the tree
                 relation of each pair (self, mother, daughter, sibling, other): the current
                 practice for decay trees; masked mean+max pool.

The convolutional ones follow the seed: embeddings of PDG and mother PDG concatenated with the
particle features for the particle branch, token embeddings for the decay-string branch, the two
branch vectors concatenated and passed through a dense head. The tree models need no decay
string (the tree *is* the string) and read only the particle branch.
Padding never leaks: activations at padded positions are zeroed after every layer and pools are
masked, so an event's score does not depend on the padding length or the batch it is in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from b2bkg.core.errors import ConfigError

__all__ = ["ARCHS", "SmcNet", "SmcEnsemble", "masked_mean", "masked_max"]

ARCHS = ("conv", "resnet", "inception", "seed", "gnn", "transformer")


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions of h (B, C, L) where mask (B, L) is true -> (B, C)."""
    m = mask.to(h.dtype).unsqueeze(1)
    return (h * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def masked_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over positions of h (B, C, L) where mask (B, L) is true -> (B, C) (0 for empty rows)."""
    neg = torch.finfo(h.dtype).min
    out = h.masked_fill(~mask.unsqueeze(1), neg).amax(-1)
    return torch.where(mask.any(-1, keepdim=True), out, torch.zeros_like(out))


# ------------------------------------------------------------------ sequence branches (B, C_in, L) -> (B, C_out)
class ConvBranch(nn.Module):
    """``n_layers`` x (Conv1D(3, C) + ReLU), masked global average pool."""

    def __init__(self, c_in: int, channels: int, n_layers: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(c_in if i == 0 else channels, channels, 3, padding=1) for i in range(n_layers))
        self.out_dim = channels

    def forward(self, h, mask):
        m = mask.unsqueeze(1).to(h.dtype)
        for conv in self.convs:
            h = F.relu(conv(h)) * m
        return masked_mean(h, mask)


class _Node(nn.Module):
    """Seed's Node(2, 3, C, Avg): two k=3 convolutions with a residual connection, then AvgPool1D(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, h, mask):
        m = mask.unsqueeze(1).to(h.dtype)
        y = F.relu(self.c1(h)) * m
        h = F.relu(h + self.c2(y)) * m
        return _pool2(h, mask)


def _pool2(h, mask):
    """AvgPool1D(2) of h (B, C, L) and the matching mask (B, ceil(L/2)); averages only real positions."""
    m = mask.unsqueeze(1).to(h.dtype)
    s = F.avg_pool1d(h * m, 2, ceil_mode=True)
    c = F.avg_pool1d(m, 2, ceil_mode=True)
    new_mask = c[:, 0] > 0
    return s / c.clamp_min(1e-6) * new_mask.unsqueeze(1).to(h.dtype), new_mask


class ResNetBranch(nn.Module):
    """Conv1D(3, C) + AvgPool1D(2), ``n_nodes`` residual nodes, masked global average pool."""

    def __init__(self, c_in: int, channels: int, n_nodes: int = 3):
        super().__init__()
        self.stem = nn.Conv1d(c_in, channels, 3, padding=1)
        self.nodes = nn.ModuleList(_Node(channels) for _ in range(n_nodes))
        self.out_dim = channels

    def forward(self, h, mask):
        h = F.relu(self.stem(h)) * mask.unsqueeze(1).to(h.dtype)
        h, mask = _pool2(h, mask)
        for node in self.nodes:
            h, mask = node(h, mask)
        return masked_mean(h, mask)


class InceptionBranch(nn.Module):
    """Seed's "N paths": parallel Conv1D(k, C) for k in ``kernels`` + ReLU, each masked-average-pooled, concatenated."""

    def __init__(self, c_in: int, channels: int, kernels=(4, 5, 9)):
        super().__init__()
        self.kernels = tuple(kernels)
        self.paths = nn.ModuleList(nn.Conv1d(c_in, channels, k) for k in self.kernels)
        self.out_dim = channels * len(self.kernels)

    def forward(self, h, mask):
        outs = []
        for k, conv in zip(self.kernels, self.paths):
            left = (k - 1) // 2
            y = F.relu(conv(F.pad(h, (left, k - 1 - left))))  # 'same' length, also for even k
            outs.append(masked_mean(y, mask))
        return torch.cat(outs, 1)


# ------------------------------------------------------------------ tree models on (B, L, C)
class TreeMessagePassing(nn.Module):
    """``n_layers`` rounds of h <- h + MLP([h, h_mother, mean h_daughters]) along mother links."""

    def __init__(self, channels: int, n_layers: int):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(3 * channels, 2 * channels), nn.ReLU(), nn.Linear(2 * channels, channels)) for _ in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(n_layers))

    def forward(self, h, mother, mask):
        B, L, C = h.shape
        has_m = mother >= 0
        midx = torch.where(has_m, mother, torch.full_like(mother, L))  # L = dump slot
        n_dau = torch.zeros(B, L + 1, dtype=h.dtype, device=h.device).scatter_add_(1, midx, mask.to(h.dtype))[:, :L]
        m = mask.unsqueeze(-1).to(h.dtype)
        for mlp, norm in zip(self.mlps, self.norms):
            hn = norm(h)
            h_mother = torch.gather(hn, 1, mother.clamp_min(0).unsqueeze(-1).expand(B, L, C)) * has_m.unsqueeze(-1).to(h.dtype)
            h_dau = torch.zeros(B, L + 1, C, dtype=h.dtype, device=h.device).scatter_add_(1, midx.unsqueeze(-1).expand(B, L, C), hn * m)[:, :L]
            h_dau = h_dau / n_dau.clamp_min(1.0).unsqueeze(-1)
            h = (h + mlp(torch.cat([hn, h_mother, h_dau], -1))) * m
        return h


class TreeAttention(nn.Module):
    """Pre-LN transformer encoder layers whose attention logits get a learned bias per head and tree relation."""

    N_REL = 5  # other, self, mother, daughter, sibling

    def __init__(self, channels: int, n_layers: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ConfigError(f"channels: {channels} is not divisible by heads={heads}")
        self.heads = heads
        self.ln1 = nn.ModuleList(nn.LayerNorm(channels) for _ in range(n_layers))
        self.qkv = nn.ModuleList(nn.Linear(channels, 3 * channels) for _ in range(n_layers))
        self.proj = nn.ModuleList(nn.Linear(channels, channels) for _ in range(n_layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(channels) for _ in range(n_layers))
        self.ff = nn.ModuleList(nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
                                for _ in range(n_layers))
        self.rel_bias = nn.Parameter(torch.zeros(n_layers, self.N_REL, heads))

    @staticmethod
    def relations(mother: torch.Tensor) -> torch.Tensor:
        """Relation type of every pair (i, j): (B, L, L) int64 (0 other, 1 self, 2 j mother of i, 3 j daughter of i, 4 sibling)."""
        B, L = mother.shape
        idx = torch.arange(L, device=mother.device)
        rel = torch.zeros(B, L, L, dtype=torch.long, device=mother.device)
        sib = (mother.unsqueeze(2) == mother.unsqueeze(1)) & (mother.unsqueeze(2) >= 0)
        rel = torch.where(sib, 4, rel)
        rel = torch.where(mother.unsqueeze(1) == idx.view(1, L, 1), 3, rel)  # mother[j] == i
        rel = torch.where(mother.unsqueeze(2) == idx.view(1, 1, L), 2, rel)  # mother[i] == j
        rel = torch.where(torch.eye(L, dtype=torch.bool, device=mother.device).unsqueeze(0), 1, rel)
        return rel

    def forward(self, h, mother, mask):
        B, L, C = h.shape
        H, n_layers = self.heads, len(self.qkv)
        rel = self.relations(mother)  # (B, L, L)
        # all layers' biases in one lookup: (B, L, L, n_layers * H) -> (n_layers, B, H, L, L)
        bias = self.rel_bias.permute(1, 0, 2).reshape(self.N_REL, n_layers * H)[rel]
        bias = bias.view(B, L, L, n_layers, H).permute(3, 0, 4, 1, 2)
        bias = bias.masked_fill(~mask.view(1, B, 1, 1, L), float("-inf"))
        m = mask.unsqueeze(-1).to(h.dtype)
        for i in range(n_layers):
            q, k, v = self.qkv[i](self.ln1[i](h)).view(B, L, 3, H, C // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, C/H)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[i])  # (B, H, L, C/H)
            h = (h + self.proj[i](a.transpose(1, 2).reshape(B, L, C))) * m
            h = (h + self.ff[i](self.ln2[i](h))) * m
        return h


# ------------------------------------------------------------------ the network
class SmcNet(nn.Module):
    """Skim classifier over the inputs of :func:`~b2bkg.selmc.features.event_features`.

    Args:
        arch: one of :data:`ARCHS`.
        n_skims: S, number of outputs.
        vocab: sorted PDG codes (V,) int64 known to the embedding (kept as a buffer, saved with the weights).
        n_features: F particle features.
        emb_dim: PDG / mother-PDG / token embedding width.
        channels: C, width of the branches.
        hidden: width of the dense head.
        n_layers: conv layers (``conv``), residual nodes (``resnet``/``seed``), rounds (``gnn``),
            attention layers (``transformer``).
        heads: attention heads (``transformer``).
        count_channels: K > 0 adds a counting branch to every architecture: a per-particle MLP
            (2E+F -> K -> K, ReLU) summed over the particles (not averaged) and compressed with
            log1p, so the network sees *how many* particles of each learned kind the event has
            (tracks in acceptance, kaons, reconstructible D daughters...), which mean pools lose.

    ``forward(batch) -> logits (B, S)`` with batch keys ``pdg``, ``mother_pdg``, ``mother`` (B, L)
    int64, ``x`` (B, L, F) float32, ``mask`` (B, L) bool, ``tokens`` (B, T) int64.
    """

    def __init__(self, arch: str, n_skims: int, vocab: torch.Tensor, n_features: int, *, emb_dim: int = 16,
                 channels: int = 64, hidden: int = 64, n_layers: int = 3, heads: int = 4, count_channels: int = 0):
        super().__init__()
        from b2bkg.selmc.features import N_SPECIAL

        if arch not in ARCHS:
            raise ConfigError(f"arch: {arch!r} is not one of {', '.join(ARCHS)}")
        self.arch = arch
        self.register_buffer("vocab", torch.as_tensor(vocab, dtype=torch.int64).clone())
        n_emb = N_SPECIAL + len(vocab)
        self.pdg_emb = nn.Embedding(n_emb, emb_dim, padding_idx=0)
        self.mother_emb = nn.Embedding(n_emb, emb_dim, padding_idx=0)
        c_part = 2 * emb_dim + n_features
        self.tree = arch in ("gnn", "transformer")
        if self.tree:
            self.inp = nn.Linear(c_part, channels)
            self.body = TreeMessagePassing(channels, n_layers) if arch == "gnn" else TreeAttention(channels, n_layers, heads)
            self.norm = nn.LayerNorm(channels)
            merged = 2 * channels
        else:
            self.tok_emb = nn.Embedding(n_emb, emb_dim, padding_idx=0)
            p_kind = {"conv": "conv", "resnet": "resnet", "inception": "inception", "seed": "resnet"}[arch]
            s_kind = {"conv": "conv", "resnet": "resnet", "inception": "inception", "seed": "inception"}[arch]
            self.particle_branch = self._branch(p_kind, c_part, channels, n_layers)
            self.string_branch = self._branch(s_kind, emb_dim, channels, n_layers)
            merged = self.particle_branch.out_dim + self.string_branch.out_dim
        self.count_channels = int(count_channels)
        if self.count_channels > 0:
            self.counter = nn.Sequential(nn.Linear(c_part, self.count_channels), nn.ReLU(),
                                         nn.Linear(self.count_channels, self.count_channels), nn.ReLU())
            merged += self.count_channels
        self.head = nn.Sequential(nn.Linear(merged, hidden), nn.ReLU(), nn.Linear(hidden, n_skims))

    @staticmethod
    def _branch(kind, c_in, channels, n_layers):
        if kind == "conv":
            return ConvBranch(c_in, channels, n_layers)
        if kind == "resnet":
            return ResNetBranch(c_in, channels, n_layers)
        return InceptionBranch(c_in, channels)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["mask"]
        part = torch.cat([self.pdg_emb(batch["pdg"]), self.mother_emb(batch["mother_pdg"]), batch["x"]], -1)  # (B, L, 2E+F)
        if self.tree:
            h = self.inp(part) * mask.unsqueeze(-1).to(part.dtype)  # (B, L, C)
            h = self.norm(self.body(h, batch["mother"], mask)).transpose(1, 2)  # (B, C, L)
            z = torch.cat([masked_mean(h, mask), masked_max(h, mask)], 1)  # (B, 2C)
        else:
            zp = self.particle_branch(part.transpose(1, 2), mask)  # (B, Cp)
            tokens = batch["tokens"]
            zs = self.string_branch(self.tok_emb(tokens).transpose(1, 2), tokens > 0)  # (B, Cs)
            z = torch.cat([zp, zs], 1)
        if self.count_channels > 0:
            counts = (self.counter(part) * mask.unsqueeze(-1).to(part.dtype)).sum(1)  # (B, K), >= 0
            z = torch.cat([z, torch.log1p(counts)], 1)
        return self.head(z)  # (B, S) logits


class SmcEnsemble(nn.Module):
    """An ensemble of :class:`SmcNet` members over the same inputs: logits averaged.

    Averaging the members' logits (the geometric mean of their odds) removes part of each
    member's training noise: members that differ only by initialisation and batch order make
    uncorrelated errors on the rare passing events. Same contract as :class:`SmcNet`:
    ``forward(batch) -> logits (B, S)``; ``member_logits(batch) -> (M, B, S)`` is what training
    uses (each member gets its own loss, so members stay independent).

    Args:
        members: M >= 2 networks built with the same vocabulary and feature width.
    """

    def __init__(self, members: list[SmcNet]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"members: an ensemble needs >= 2 networks, got {len(members)}")
        v0 = members[0].vocab
        if any(m.vocab.shape != v0.shape or not torch.equal(m.vocab, v0) for m in members[1:]):
            raise ConfigError("members: the networks of an ensemble must share one PDG vocabulary")
        self.members = nn.ModuleList(members)
        self.register_buffer("vocab", v0.clone())

    def member_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of every member, (M, B, S)."""
        return torch.stack([m(batch) for m in self.members])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.member_logits(batch).mean(0)
