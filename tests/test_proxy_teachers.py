"""Teachers and the proxy task: real training on cifar10_small, with a tiny student."""

import pytest
import torch

from models.arch import Arch
from models.teachers import Ensemble, cifar_resnet
from pipeline.batches import BatchLoader
from pipeline.config import ProxyConfig
from pipeline.data import split_train_val
from pipeline.proxy import (
    CachedTeacher,
    OnlineTeacher,
    evaluate,
    learning_rate,
    train_candidate,
)

TINY = Arch.decode(
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_re|ds_k5_s2_se0_pool_c24_n1_re"
    "|conv_k3_s1_se0_id_c24_n1_re|head_c64_re"
)


@pytest.mark.parametrize(
    "name, params",  # He et al. Table 6 (option A): 0.27M, 0.46M, 0.85M, 1.7M
    [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018), ("resnet110", 1_727_962)],
)
def test_cifar_resnets_have_the_published_sizes(name, params):
    model = cifar_resnet(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_ensemble_averages_member_logits_and_unknown_teacher_is_rejected():
    torch.manual_seed(0)
    members = [cifar_resnet("resnet20").eval(), cifar_resnet("resnet20").eval()]
    ensemble = Ensemble(members).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        stacked = ensemble.member_logits(x)
        assert stacked.shape == (2, 3, 10)
        torch.testing.assert_close(ensemble(x), (members[0](x) + members[1](x)) / 2)
    with pytest.raises(ValueError, match="resnet20, resnet32"):
        cifar_resnet("resnet18")


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    assert learning_rate(0, 100, 10, 0.1) == pytest.approx(0.01)
    assert learning_rate(9, 100, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(10, 100, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(55, 100, 10, 0.1) == pytest.approx(0.05)
    assert learning_rate(100, 100, 10, 0.1) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def splits(cifar_small):
    small_train = cifar_small[0].take(torch.arange(1500).numpy())
    return split_train_val(small_train, val_fraction=1 / 3, seed=0)


def test_proxy_training_is_deterministic_and_learns(splits):
    mini_train, mini_val = splits
    settings = ProxyConfig(epochs=3, batch_size=50, lr=0.2, loss="ce")
    first = train_candidate(TINY, mini_train, mini_val, settings, seed=1)
    again = train_candidate(TINY, mini_train, mini_val, settings, seed=1)
    assert first.accuracy == again.accuracy
    assert first.train_loss_per_epoch == again.train_loss_per_epoch
    assert first.train_loss_per_epoch[-1] < first.train_loss_per_epoch[0]
    assert first.accuracy > 0.2  # chance is 0.1; 1,000 images, 3 epochs
    other_seed = train_candidate(TINY, mini_train, mini_val, settings, seed=2)
    assert other_seed.train_loss_per_epoch != first.train_loss_per_epoch


def test_cached_teacher_logits_train_exactly_like_the_online_teacher(splits, tmp_path):
    mini_train, mini_val = splits
    torch.manual_seed(0)
    teacher = cifar_resnet("resnet20").eval()
    settings, seed = ProxyConfig(epochs=1, batch_size=50), 3
    loader = BatchLoader(mini_train, settings.batch_size, train=True, seed=seed)
    cached = CachedTeacher.compute(teacher, loader, epochs=1)
    cached.save(tmp_path / "teacher.pt")
    reloaded = CachedTeacher.load(tmp_path / "teacher.pt")
    online = train_candidate(TINY, mini_train, mini_val, settings, OnlineTeacher(teacher), seed=3)
    offline = train_candidate(TINY, mini_train, mini_val, settings, reloaded, seed=3)
    assert offline.train_loss_per_epoch == online.train_loss_per_epoch
    assert offline.accuracy == online.accuracy
    # KD loss to an untrained teacher is a different objective from cross-entropy
    ce = train_candidate(
        TINY, mini_train, mini_val, ProxyConfig(epochs=1, batch_size=50, loss="ce"), seed=3
    )
    assert ce.train_loss_per_epoch != online.train_loss_per_epoch
    with pytest.raises(ValueError, match="cached for 1 epochs, epoch 1 asked"):
        train_candidate(
            TINY, mini_train, mini_val, ProxyConfig(epochs=2, batch_size=50), cached, seed=3
        )


def test_bad_proxy_settings_are_rejected_clearly(splits):
    with pytest.raises(ValueError, match="proxy.loss: must be one of.*'ce'.*'kd'"):
        ProxyConfig(loss="mse")
    with pytest.raises(ValueError, match="needs a teacher"):
        train_candidate(TINY, *splits, ProxyConfig(epochs=1))


def test_evaluate_counts_top1_on_real_images(splits):
    _, mini_val = splits
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model(torch.zeros(1, 3, 32, 32))
    torch.nn.init.zeros_(model[1].weight)
    with torch.no_grad():
        model[1].bias.copy_(torch.eye(10)[3])  # always predicts class 3
    assert evaluate(model, mini_val) == pytest.approx((mini_val.labels == 3).mean())
