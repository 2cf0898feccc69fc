"""The MnasNet weighted-product reward: hand-computed values, presets, validation."""

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.reward import HARD, SOFT, RewardSpec, reward


def test_soft_reward_on_hand_computed_values():
    assert 2**-0.07 == pytest.approx(0.9526, abs=1e-4)
    assert reward(0.8, 10.0, 10.0, *SOFT) == pytest.approx(0.8)  # at the target: ACC
    assert reward(0.5, 20.0, 10.0, *SOFT) == pytest.approx(0.5 * 0.952638, abs=1e-6)  # 2x slow
    assert reward(0.5, 5.0, 10.0, *SOFT) == pytest.approx(0.5 * 1.049717, abs=1e-6)  # 2x fast


def test_soft_reward_trades_2x_latency_for_about_5_percent_accuracy():
    # MnasNet sec. 3: with alpha = beta = -0.07, a model twice as slow needs ~5% relative
    # accuracy gain for the same reward.
    base = reward(0.70, 15.0, 15.0, *SOFT)
    assert reward(0.70 * 1.0497, 30.0, 15.0, *SOFT) == pytest.approx(base, rel=1e-4)
    assert reward(0.70 * 1.04, 30.0, 15.0, *SOFT) < base < reward(0.70 * 1.06, 30.0, 15.0, *SOFT)


def test_hard_reward_ignores_cost_within_the_target_and_divides_by_the_overshoot():
    assert reward(0.7, 5.0, 10.0, *HARD) == 0.7
    assert reward(0.7, 10.0, 10.0, *HARD) == 0.7
    assert reward(0.7, 20.0, 10.0, *HARD) == pytest.approx(0.35)
    assert reward(0.9, 3e8, 2e8, *HARD) == pytest.approx(0.6)  # MACs work the same way


def test_the_exponent_switches_at_the_target():
    # alpha applies up to and including the target, beta beyond it.
    assert reward(0.5, 5.0, 10.0, alpha=-1.0, beta=-2.0) == pytest.approx(1.0)  # 0.5 * 0.5^-1
    assert reward(0.5, 20.0, 10.0, alpha=-1.0, beta=-2.0) == pytest.approx(0.125)  # 0.5 * 2^-2


@given(
    accuracy=st.floats(0.0, 1.0),
    cost=st.floats(1e-3, 1e3),
    ratio=st.floats(1.0, 10.0),
    preset=st.sampled_from([SOFT, HARD]),
)
def test_reward_never_rises_with_cost_and_is_at_most_accuracy_beyond_target(
    accuracy, cost, ratio, preset
):
    target = 10.0
    slower = reward(accuracy, cost * ratio, target, *preset)
    assert slower <= reward(accuracy, cost, target, *preset) + 1e-12
    if cost >= target:
        assert reward(accuracy, cost, target, *preset) <= accuracy + 1e-12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.5, 10.0, 0.0), "target"),
        ((0.5, 10.0, -3.0), "target"),
        ((0.5, 10.0, math.nan), "target"),
        ((0.5, 0.0, 10.0), "cost"),
        ((0.5, -1.0, 10.0), "cost"),
        ((0.5, math.inf, 10.0), "cost"),
        ((-0.1, 10.0, 10.0), "accuracy"),
        ((1.1, 10.0, 10.0), "accuracy"),
        ((math.nan, 10.0, 10.0), "accuracy"),
    ],
)
def test_bad_inputs_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        reward(*args, *SOFT)


def test_reward_spec_presets():
    soft = RewardSpec.preset("soft", 15.0)
    assert (soft.target, soft.alpha, soft.beta, soft.cost) == (15.0, -0.07, -0.07, "latency_ms")
    hard = RewardSpec.preset("hard", 300e6, cost="macs")
    assert (hard.alpha, hard.beta, hard.cost) == (0.0, -1.0, "macs")
    assert RewardSpec(15.0) == soft  # soft latency is the default, as in AKD
    assert soft(0.5, 30.0) == reward(0.5, 30.0, 15.0, *SOFT)
    assert hard(0.9, 600e6) == pytest.approx(0.45)
    with pytest.raises(dataclasses.FrozenInstanceError):
        soft.target = 20.0  # type: ignore[misc]


def test_reward_spec_validation():
    with pytest.raises(ValueError, match="unknown reward preset 'medium'"):
        RewardSpec.preset("medium", 15.0)
    with pytest.raises(ValueError, match="unknown reward cost 'flops'"):
        RewardSpec.preset("soft", 15.0, cost="flops")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        RewardSpec.preset("hard", 0.0)
    with pytest.raises(ValueError, match="finite"):
        RewardSpec(15.0, alpha=math.nan)
    with pytest.raises(ValueError, match="cost"):
        RewardSpec(15.0)(0.5, 0.0)
