"""KDAS's controller: an LSTM policy trained with REINFORCE and a moving-average baseline.

KDAS (Kang et al., AAAI 2020, eqs. 5-6), following ENAS: maximise J = E_m[R(m)] with

    grad J ~ 1/N sum_j (R(m_j) - b) grad log pi(m_j),    log pi(m) = sum_t log pi(a_t | a_<t)

"where b is a baseline function given by a moving average of the past rewards".  We minimise

    - mean_j (R(m_j) - b) log pi(m_j) - entropy_weight * mean_j sum_t H(pi(. | a_<t))

using the baseline from before the batch, then fold each reward in turn into the exponential
moving average ``b <- decay * b + (1 - decay) * R`` (decay 0.95).  ENAS starts b at 0; we start
it at the first batch's mean reward so early batches are not all "better than expected".
Advantages are not rescaled (as in KDAS/ENAS); Adam makes the step size insensitive to the reward
scale, but the entropy bonus is not, so keep ``entropy_weight`` small (ENAS: 1e-4) when rewards
differ by fractions of a percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.controllers.base import keyword_options
from pipeline.controllers.policy import PolicyController


class ReinforceController(PolicyController):
    kind = "reinforce"

    def __init__(
        self,
        decisions: Sequence[Any],
        seed: int = 0,
        *,
        hidden_size: int = 64,
        learning_rate: float = 3e-3,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-4,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        config = keyword_options(ReinforceController.__init__, locals())
        super().__init__(decisions, seed, config, value_head=False)
        self.baseline: float | None = None

    def update(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> dict[str, float]:
        actions, returns = self._batch(choices, rewards)
        if self.baseline is None:
            self.baseline = float(returns.mean())
        advantages = returns - self.baseline
        rollout = self.policy(actions)
        policy_loss = -(advantages * rollout.log_probs.sum(dim=1)).mean()
        entropy = rollout.entropies.sum(dim=1).mean()
        grad_norm = self._step(policy_loss - self.config["entropy_weight"] * entropy)
        used_baseline = self.baseline
        decay = self.config["baseline_decay"]
        for value in returns.tolist():
            self.baseline = decay * self.baseline + (1 - decay) * value
        self.updates += 1
        return {
            "reward_mean": float(returns.mean()),
            "reward_max": float(returns.max()),
            "baseline": used_baseline,
            "policy_loss": policy_loss.item(),
            "entropy": entropy.item() / len(self.option_counts),  # mean per decision, nats
            "grad_norm": grad_norm,
            "updates": float(self.updates),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.baseline = state["baseline"]
