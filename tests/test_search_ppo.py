"""PPO (AKD's controller) raises the probability of a rewarded choice on a toy reward."""

import torch

from models.space import get_space
from pipeline.controllers import make_controller


def _probability_of_first_option(controller, step: int = 0) -> float:
    """pi(option 0 at `step` | earlier choices all 0): step 0 has no earlier choices."""
    actions = torch.zeros(1, len(controller.option_counts), dtype=torch.long)
    with torch.no_grad():
        return float(controller.policy(actions).log_probs[0, step].exp())


def test_ppo_raises_the_probability_of_the_rewarded_choice():
    decisions = get_space("mnas-cifar").decisions()  # decision 0: op, 4 options
    controller = make_controller("ppo", decisions, seed=0)
    before = _probability_of_first_option(controller)
    for _ in range(10):
        proposals = controller.propose(8)
        # toy reward: 1 when the first decision picks option 0, else 0
        rewards = [1.0 if p[0] == 0 else 0.0 for p in proposals]
        if len(set(rewards)) > 1:  # a batch with no contrast teaches nothing
            controller.update(proposals, rewards)
    after = _probability_of_first_option(controller)
    assert abs(before - 0.25) < 0.1  # starts near uniform over 4 ops
    assert after > before + 0.3, (before, after)
