"""AKD's controller: an LSTM actor-critic trained with PPO.

AKD (Liu et al., CVPR 2020, sec. 3.1): "we use a RNN-based actor-critic agent ... The RNN weights
are updated using PPO algorithm [Schulman et al. 2017] by maximizing the expected KD-guided
reward."  Each decision is one action; the only reward arrives after the last one, so with no
discount the return of every step is the architecture's reward R and the advantage of step t is

    A_t = R - V(s_t)                                       (actor-critic, gamma = lambda = 1)

optionally normalised over the batch.  For ``epochs`` passes over the batch we minimise

    - mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)          (PPO eq. 7, eps = 0.2)
    + value_weight * mean_t (V(s_t) - R)^2 - entropy_weight * mean_t H(pi(. | s_t))

with ``r_t = pi(a_t | s_t) / pi_old(a_t | s_t)``.  ``pi_old`` is the policy at the start of
`update`, which is the one that proposed the batch when the loop alternates propose/update.

Not in the paper, but common PPO practice and needed here (``normalize_rewards``): R is first
standardised with exponential moving mean and variance (decay 0.95 per reward, statistics that
already include the batch).  Rewards of a real search differ by fractions of a percent of
accuracy; without this the critic's errors are larger than those differences and drown them
(BENCHMARKS.md, "PPO controller: reward normalisation").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pipeline.controllers.base import keyword_options
from pipeline.controllers.policy import PolicyController


class PPOController(PolicyController):
    kind = "ppo"

    def __init__(
        self,
        decisions: Sequence[Any],
        seed: int = 0,
        *,
        hidden_size: int = 64,
        learning_rate: float = 3e-3,
        clip_epsilon: float = 0.2,
        epochs: int = 4,
        entropy_weight: float = 1e-3,
        value_weight: float = 0.5,
        normalize_rewards: bool = True,
        reward_decay: float = 0.95,
        normalize_advantages: bool = True,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if not 0 < clip_epsilon < 1:
            raise ValueError(f"clip_epsilon must be in (0, 1), got {clip_epsilon}")
        if not 0 <= reward_decay < 1:
            raise ValueError(f"reward_decay must be in [0, 1), got {reward_decay}")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        config = keyword_options(PPOController.__init__, locals())
        super().__init__(decisions, seed, config, value_head=True)
        self.reward_mean: float | None = None  # running statistics for normalize_rewards
        self.reward_var = 0.0

    def update(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> dict[str, float]:
        actions, rewards_t = self._batch(choices, rewards)
        cfg = self.config
        returns = self._normalized(rewards_t) if cfg["normalize_rewards"] else rewards_t
        with torch.no_grad():
            old = self.policy(actions)
            advantages = returns.unsqueeze(1) - old.values  # (B, T)
            if cfg["normalize_advantages"] and advantages.numel() > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        eps = cfg["clip_epsilon"]
        for _ in range(cfg["epochs"]):
            new = self.policy(actions)
            ratio = torch.exp(new.log_probs - old.log_probs)
            surrogate = torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
            policy_loss = -surrogate.mean()
            value_loss = (new.values - returns.unsqueeze(1)).pow(2).mean()
            entropy = new.entropies.mean()
            loss = policy_loss + cfg["value_weight"] * value_loss - cfg["entropy_weight"] * entropy
            grad_norm = self._step(loss)
        self.updates += 1
        with torch.no_grad():
            log_ratio = new.log_probs - old.log_probs
            return {
                "reward_mean": float(rewards_t.mean()),
                "reward_max": float(rewards_t.max()),
                "policy_loss": float(policy_loss),
                "value_loss": float(value_loss),
                "entropy": float(entropy),  # mean per decision, nats
                "approx_kl": float((-log_ratio).mean()),  # KL(pi_old || pi), last epoch
                "clip_fraction": float(((ratio - 1).abs() > eps).float().mean()),
                "grad_norm": grad_norm,
                "updates": float(self.updates),
            }

    def _normalized(self, rewards: torch.Tensor) -> torch.Tensor:
        """``(R - mean) / std`` under exponential moving statistics that already include this
        batch (so the result stays bounded); the first batch initialises them."""
        decay = self.config["reward_decay"]
        if self.reward_mean is None:
            self.reward_mean = float(rewards.mean())
            self.reward_var = float(rewards.var(correction=0))
        else:
            for value in rewards.tolist():  # Welford-style EMA update of mean and variance
                delta = value - self.reward_mean
                self.reward_mean += (1 - decay) * delta
                self.reward_var = decay * (self.reward_var + (1 - decay) * delta**2)
        return (rewards - self.reward_mean) / (self.reward_var**0.5 + 1e-8)

    def _extra_state(self) -> dict[str, Any]:
        return {"reward_mean": self.reward_mean, "reward_var": self.reward_var}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.reward_mean = state["reward_mean"]
        self.reward_var = state["reward_var"]
