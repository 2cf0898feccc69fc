"""The autoregressive LSTM policy shared by the PPO (AKD) and REINFORCE (KDAS) controllers.

As in NAS with RL (Zoph & Le 2017), ENAS (Pham et al. 2018) and MnasNet: one LSTM step per
decision; the input of step t is an embedding of the choice made at step t - 1 (a learned start
token at t = 0); step t's hidden state feeds a softmax head sized to decision t's option count.
With ``value_head=True`` a linear critic reads the same hidden state, giving V(s_t) for the
partial architecture decided so far (AKD's actor-critic agent).

All randomness (initialisation and sampling) comes from a `torch.Generator` passed in, so the
global torch RNG is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.controllers.base import (
    check_batch,
    check_proposal_count,
    check_state_header,
    option_counts,
)


@dataclass
class Rollout:
    """What the policy says about a batch of B choice vectors over T decisions."""

    log_probs: Tensor  # (B, T) log pi(a_t | a_<t)
    entropies: Tensor  # (B, T) entropy of each step's distribution, nats
    values: Tensor | None  # (B, T) V(s_t) before decision t, or None without a value head


class LSTMPolicy(nn.Module):
    """One LSTM step per decision; per-step softmax heads; optional value head.

    The heads of all steps are stored as one linear layer with ``sum(option_counts)`` outputs, of
    which step t uses only its own slice: that is a separate head per step, evaluated for the
    whole sequence in one matrix product.
    """

    def __init__(
        self,
        option_counts: tuple[int, ...],
        hidden_size: int,
        generator: torch.Generator,
        value_head: bool = False,
        init_range: float = 0.1,
    ) -> None:
        super().__init__()
        self.option_counts = tuple(option_counts)
        counts = torch.tensor(self.option_counts)
        starts = torch.cumsum(counts, 0) - counts  # step t's slice of the heads' outputs
        slots = torch.arange(int(counts.max()))
        self.register_buffer("mask", slots < counts[:, None], persistent=False)  # (T, K)
        self.register_buffer(
            "head_index",
            (starts[:, None] + slots).clamp(max=int(counts.sum()) - 1),
            persistent=False,
        )  # (T, K)
        self.register_buffer("token_offset", starts + 1, persistent=False)  # row 0: start token
        with torch.random.fork_rng(devices=[]):  # default inits draw from the global RNG
            self.embedding = nn.Embedding(1 + int(counts.sum()), hidden_size)
            self.lstm = nn.LSTM(hidden_size, hidden_size, batch_first=True)
            self.heads = nn.Linear(hidden_size, int(counts.sum()))
            self.value = nn.Linear(hidden_size, 1) if value_head else None
        with torch.no_grad():  # ENAS's controller init: uniform(-0.1, 0.1) for every weight
            for parameter in self.parameters():
                parameter.uniform_(-init_range, init_range, generator=generator)

    def _log_softmax(self, hidden: Tensor, steps: slice) -> Tensor:
        """Log-probabilities (B, T', K) of the decisions in ``steps`` from their hidden states
        (B, T', H); the K - count_t padding options of a step get probability 0."""
        logits = self.heads(hidden)  # (B, T', sum K)
        index = self.head_index[steps].expand(logits.shape[0], -1, -1)
        step_logits = logits.gather(-1, index).masked_fill(~self.mask[steps], -1e9)
        return torch.log_softmax(step_logits, dim=-1)

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """``batch_size`` choice vectors, (B, T) int64, sampled autoregressively."""
        hidden_size = self.lstm.hidden_size
        h = c = torch.zeros(batch_size, hidden_size)
        token = torch.zeros(batch_size, dtype=torch.long)  # start token
        chosen = []
        for step in range(len(self.option_counts)):
            h, c = self.cell_step(self.embedding(token), h, c)
            log_p = self._log_softmax(h.unsqueeze(1), slice(step, step + 1))[:, 0]  # (B, K)
            action = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
            chosen.append(action)
            token = action + self.token_offset[step]
        return torch.stack(chosen, dim=1)

    def cell_step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step of ``self.lstm`` (PyTorch's gate order i, f, g, o), without the per-call
        overhead of `nn.LSTM`, which dominates when sampling one step at a time."""
        lstm = self.lstm
        gates = (
            x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        )
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, actions: Tensor) -> Rollout:
        """Log-probabilities, entropies and values along given (B, T) choice vectors."""
        previous = actions[:, :-1] + self.token_offset[:-1]
        tokens = torch.cat([torch.zeros_like(actions[:, :1]), previous], dim=1)
        hidden, _ = self.lstm(self.embedding(tokens))  # (B, T, H): state s_t before decision t
        log_p = self._log_softmax(hidden, slice(None))  # (B, T, K)
        return Rollout(
            log_probs=log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1),
            entropies=-(log_p.exp() * log_p).sum(dim=-1),
            values=self.value(hidden).squeeze(-1) if self.value is not None else None,
        )


class PolicyController:
    """What the PPO and REINFORCE controllers share: the policy, Adam, the RNG, proposing and
    (de)serialising.  Subclasses implement `update` and name their hyperparameters in
    ``self.config`` and any extra state in `_extra_state` / `_load_extra_state`."""

    kind = "policy"

    def __init__(
        self,
        decisions: Sequence[Any],
        seed: int,
        config: dict[str, Any],
        value_head: bool,
    ) -> None:
        self.option_counts = option_counts(decisions)
        self.config = dict(config)
        self.generator = torch.Generator().manual_seed(seed)
        self.policy = LSTMPolicy(
            self.option_counts, config["hidden_size"], self.generator, value_head=value_head
        )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config["learning_rate"])
        self.updates = 0

    def propose(self, n: int) -> list[list[int]]:
        check_proposal_count(n)
        if n == 0:
            return []
        return self.policy.sample(n, self.generator).tolist()

    def _batch(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> tuple[Tensor, Tensor]:
        """The batch as (B, T) int64 actions and (B,) float32 rewards, after validation."""
        choices, rewards = check_batch(self.option_counts, choices, rewards)
        return torch.tensor(choices, dtype=torch.long), torch.tensor(rewards)

    def _step(self, loss: Tensor) -> float:
        """One Adam step on ``loss``; returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config["max_grad_norm"]
        norm = nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm or float("inf"))
        self.optimizer.step()
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "kind": self.kind,
                "option_counts": self.option_counts,
                "config": self.config,
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "updates": self.updates,
                **self._extra_state(),
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_header(self.kind, self.option_counts, self.config, state)
        state = copy.deepcopy(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass
