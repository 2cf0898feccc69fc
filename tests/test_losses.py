"""KD losses: hand-computed values, an independent numpy reference, gradients, edge cases."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.losses import cross_entropy, hinton_kd, oracle_kd


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_kd(s: np.ndarray, t: np.ndarray, y: int, temperature: float, alpha: float) -> float:
    """One example of alpha T^2 KL(p_t || p_s) + (1 - alpha) CE, written out in numpy."""
    log_ps, log_pt = _np_log_softmax(s / temperature), _np_log_softmax(t / temperature)
    kl = float((np.exp(log_pt) * (log_pt - log_ps)).sum())
    ce = float(-_np_log_softmax(s)[y])
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def _np_oracle(s, members, labels, temperature, alpha) -> float:
    """KDAS eq. 4 example by example, as a reference."""
    s, members = np.asarray(s), np.asarray(members)
    losses = []
    for i, y in enumerate(labels):
        correct = [m[i] for m in members if int(np.argmax(m[i])) == y]
        if correct:
            losses.append(_np_kd(s[i], np.mean(correct, axis=0), y, temperature, alpha))
        else:
            losses.append(float(-_np_log_softmax(s[i])[y]))
    return float(np.mean(losses))


def _t(x, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


def test_hinton_kd_on_a_hand_computed_example():
    # p_s = (1/2, 1/2), p_t = (3/4, 1/4), label 0.
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120;  CE = ln 2 = 0.6931472
    # AKD (T=1, alpha=0.9): 0.9 * 0.1308120 + 0.1 * 0.6931472 = 0.1870455
    student, teacher, labels = _t([[0.0, 0.0]]), _t([[math.log(3.0), 0.0]]), torch.tensor([0])
    assert float(cross_entropy(student, labels)) == pytest.approx(0.6931472, abs=1e-7)
    assert float(hinton_kd(student, teacher, labels)) == pytest.approx(0.1870455, abs=1e-7)
    assert float(hinton_kd(student, teacher, labels, alpha=1.0)) == pytest.approx(0.1308120, 1e-6)


def test_hinton_kd_matches_the_numpy_reference_and_averages_over_the_batch():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    y = rng.integers(0, 4, size=5)
    expected = np.mean([_np_kd(s[i], t[i], y[i], 2.0, 0.7) for i in range(5)])
    got = hinton_kd(_t(s), _t(t), torch.tensor(y), temperature=2.0, alpha=0.7)
    assert float(got) == pytest.approx(expected, rel=1e-10)
    assert float(cross_entropy(_t(s), torch.tensor(y))) == pytest.approx(
        np.mean([-_np_log_softmax(s[i])[y[i]] for i in range(5)]), rel=1e-10
    )


def test_hinton_kd_limits():
    rng = np.random.default_rng(1)
    s, t, y = _t(rng.normal(size=(3, 5))), _t(rng.normal(size=(3, 5))), torch.tensor([0, 4, 2])
    assert float(hinton_kd(s, t, y, alpha=0.0)) == pytest.approx(float(cross_entropy(s, y)))
    assert float(hinton_kd(s, s, y, temperature=4.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(hinton_kd(s, t, y, alpha=1.0)) > 0


def test_the_kl_term_is_scaled_by_t_squared():
    rng = np.random.default_rng(2)
    s, t, y = _t(rng.normal(size=(4, 6))), _t(rng.normal(size=(4, 6))), torch.tensor([1, 2, 3, 4])
    for temperature in (0.5, 2.0, 5.0):
        soft = hinton_kd(s, t, y, temperature=temperature, alpha=1.0)
        # KL of the softened distributions, i.e. of logits divided by T at T = 1 ...
        plain = hinton_kd(s / temperature, t / temperature, y, temperature=1.0, alpha=1.0)
        assert float(soft) == pytest.approx(temperature**2 * float(plain), rel=1e-10)


def test_t_squared_keeps_the_gradient_scale_at_high_temperature():
    # d(T^2 KL)/ds_i = T (p_s,i - p_t,i) -> ((s_i - mean s) - (t_i - mean t)) / C as T grows
    # (Hinton et al. 2015, sec. 2.1), divided by B for the batch mean.
    rng = np.random.default_rng(3)
    s = _t(rng.normal(size=(2, 5))).requires_grad_()
    t = _t(rng.normal(size=(2, 5)))
    hinton_kd(s, t, torch.tensor([0, 1]), temperature=1e4, alpha=1.0).backward()
    centred = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))
    torch.testing.assert_close(s.grad, centred.detach() / (5 * 2), rtol=1e-2, atol=1e-5)


# Three members, three examples, three classes.  Labels (0, 1, 2).
MEMBERS = [
    [[3.0, 1.0, 0.0], [2.0, 0.5, 0.0], [0.0, 1.0, 2.5]],  # right on 0 and 2
    [[0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [1.0, 0.0, 2.0]],  # right on 2 only
    [[1.5, 0.0, 0.5], [0.0, 0.0, 4.0], [0.0, 0.0, 3.0]],  # right on 0 and 2
]
LABELS = [0, 1, 2]
STUDENT = [[0.5, 0.2, -0.3], [0.1, 0.4, 0.0], [-1.0, 0.3, 0.9]]


def test_oracle_kd_follows_kdas_eq_4_on_a_hand_built_ensemble():
    s, m, y = _t(STUDENT), _t(MEMBERS), torch.tensor(LABELS)
    # Example 0: members 0 and 2 are right -> distil from their mean logits (2.25, 0.5, 0.25).
    # Example 1: nobody is right -> plain cross-entropy.
    # Example 2: all three are right -> distil from the mean of all three.
    per_example = [
        float(hinton_kd(s[:1], _t([[2.25, 0.5, 0.25]]), y[:1], temperature=2.0, alpha=0.8)),
        float(cross_entropy(s[1:2], y[1:2])),
        float(hinton_kd(s[2:], m[:, 2].mean(0, keepdim=True), y[2:], temperature=2.0, alpha=0.8)),
    ]
    got = float(oracle_kd(s, m, y, temperature=2.0, alpha=0.8))
    assert got == pytest.approx(sum(per_example) / 3, rel=1e-12)
    assert got == pytest.approx(_np_oracle(STUDENT, np.array(MEMBERS), LABELS, 2.0, 0.8), 1e-10)


def test_oracle_kd_with_no_member_correct_is_plain_cross_entropy():
    s, y = _t(STUDENT), torch.tensor([2, 1, 0])  # no member predicts these
    m = _t(MEMBERS)
    assert not (m.argmax(-1) == y).any()
    for temperature, alpha in ((1.0, 0.9), (3.0, 1.0)):
        got = oracle_kd(s, m, y, temperature=temperature, alpha=alpha)
        assert float(got) == pytest.approx(float(cross_entropy(s, y)), rel=1e-12)


def test_oracle_kd_with_every_member_correct_is_kd_to_the_mean_logits():
    rng = np.random.default_rng(4)
    y = torch.tensor([0, 3, 1, 2])
    members = _t(rng.normal(size=(4, 4, 5)))
    members[:, torch.arange(4), y] += 10.0  # everyone is right everywhere
    s = _t(rng.normal(size=(4, 5)))
    got = oracle_kd(s, members, y, temperature=3.0, alpha=0.9)
    expected = hinton_kd(s, members.mean(0), y, temperature=3.0, alpha=0.9)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


def test_wrong_members_do_not_influence_the_oracle_loss():
    s, m, y = _t(STUDENT), _t(MEMBERS), torch.tensor(LABELS)
    before = float(oracle_kd(s, m, y))
    m[1, 0] = _t([-5.0, 7.0, 3.0])  # member 1 stays wrong on example 0, with other logits
    assert float(oracle_kd(s, m, y)) == pytest.approx(before, rel=1e-12)
    m[1, 0] = _t([9.0, 0.0, 0.0])  # now it is right: it joins the oracle teacher
    assert float(oracle_kd(s, m, y)) != pytest.approx(before, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 6),
    classes=st.integers(2, 5),
    members=st.integers(1, 4),
    temperature=st.floats(0.5, 5.0),
    alpha=st.floats(0.0, 1.0),
)
def test_oracle_kd_matches_the_reference_on_random_ensembles(
    seed, batch, classes, members, temperature, alpha
):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(batch, classes)) * 2
    m = rng.normal(size=(members, batch, classes)) * 2
    y = rng.integers(0, classes, size=batch)
    got = oracle_kd(_t(s), _t(m), torch.tensor(y), temperature=temperature, alpha=alpha)
    assert float(got) == pytest.approx(_np_oracle(s, m, y, temperature, alpha), rel=1e-9, abs=1e-12)


def test_gradients_are_correct_in_float64():
    rng = np.random.default_rng(5)
    s = _t(rng.normal(size=(3, 4))).requires_grad_()
    t = _t(rng.normal(size=(3, 4))).requires_grad_()
    y = torch.tensor([0, 2, 3])
    assert torch.autograd.gradcheck(lambda a: cross_entropy(a, y), (s,))
    assert torch.autograd.gradcheck(lambda a, b: hinton_kd(a, b, y, 2.0, 0.7), (s, t))
    # Well separated member logits, so the finite differences never flip who is correct.
    members = _t(MEMBERS).requires_grad_()
    student = _t(STUDENT).requires_grad_()
    labels = torch.tensor(LABELS)
    assert torch.autograd.gradcheck(
        lambda a, b: oracle_kd(a, b, labels, 2.0, 0.8), (student, members)
    )


def test_oracle_kd_gives_wrong_members_and_ce_examples_no_teacher_gradient():
    s, m, y = _t(STUDENT), _t(MEMBERS).requires_grad_(), torch.tensor(LABELS)
    oracle_kd(s, m, y, temperature=2.0).backward()
    assert torch.all(m.grad[1, 0] == 0)  # member 1 is wrong on example 0
    assert torch.all(m.grad[:, 1] == 0)  # example 1 falls back to cross-entropy
    assert torch.all(m.grad[0, 0] != 0)


def test_float32_works_and_bad_inputs_are_rejected():
    s, t, y = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1])
    assert torch.isfinite(hinton_kd(s, t, y)) and torch.isfinite(oracle_kd(s, t[None], y))
    with pytest.raises(ValueError, match="same shape"):
        hinton_kd(s, torch.randn(2, 4), y)
    with pytest.raises(ValueError, match=r"\(M, B, C\)"):
        oracle_kd(s, t, y)
    with pytest.raises(ValueError, match="no ensemble member"):
        oracle_kd(s, torch.randn(0, 2, 3), y)
    with pytest.raises(ValueError, match="temperature"):
        hinton_kd(s, t, y, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        oracle_kd(s, t[None], y, alpha=1.5)
    with pytest.raises(ValueError, match="int64"):
        cross_entropy(s, y.float())
    with pytest.raises(ValueError, match=r"labels must be \(B,\)"):
        cross_entropy(s, torch.tensor([0, 1, 2]))
