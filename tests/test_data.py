"""pipeline.data on the real cifar10_small.npz: loaders, splits, batch augmentation, BatchLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from pipeline.batches import BatchLoader, augment_batch, crop_and_flip, normalize
from pipeline.data import (
    CIFAR10_CLASSES,
    DataError,
    ImageArrays,
    channel_mean_std,
    load_cifar_folder,
    load_dataset,
    load_image_folder,
    load_npz,
    split_indices,
    split_train_val,
)

# ---------------------------------------------------------------------------------------------
# Loading


def test_cifar_small_shapes_dtypes_and_classes(cifar_small):
    train, test = cifar_small
    assert train.images.shape == (5000, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (1000, 32, 32, 3) and test.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.labels.dtype == np.int64
    assert train.class_names == test.class_names == CIFAR10_CLASSES
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10


def test_channel_mean_std_close_to_published_constants(cifar_small):
    mean, std = channel_mean_std(cifar_small[0])
    # JPEG-derived data: means match to ~1e-3, spread slightly lower (see shared/data/README.md).
    np.testing.assert_allclose(mean, CIFAR10_MEAN, atol=0.005)
    np.testing.assert_allclose(std, CIFAR10_STD, atol=0.01)


def _write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The pickled dict format of torchvision's cifar-10-batches-py files."""
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": labels.tolist(),
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_cifar_folder_round_trips_pixels(cifar_small, tmp_path):
    train, test = cifar_small[0].take(np.arange(100)), cifar_small[1].take(np.arange(30))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(5):
        part = slice(20 * i, 20 * (i + 1))
        _write_cifar_batch(folder / f"data_batch_{i + 1}", train.images[part], train.labels[part])
    _write_cifar_batch(folder / "test_batch", test.images, test.labels)
    with (folder / "batches.meta").open("wb") as f:
        meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072}
        pickle.dump(meta, f, protocol=2)

    for path in (folder, tmp_path):  # the folder itself, or its parent
        got_train, got_test = load_cifar_folder(path)
        np.testing.assert_array_equal(got_train.images, train.images)
        np.testing.assert_array_equal(got_train.labels, train.labels)
        np.testing.assert_array_equal(got_test.images, test.images)
        assert got_test.class_names == CIFAR10_CLASSES
    np.testing.assert_array_equal(load_dataset(folder)[1].labels, test.labels)

    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_cifar_folder(folder)


def _write_pngs(folder: Path, arrays: ImageArrays) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(arrays.images, arrays.labels, strict=True)):
        class_dir = folder / arrays.class_names[label]
        class_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(class_dir / f"{i:05d}.png")


def test_image_folder_round_trips_png_pixels(cifar_small, tmp_path):
    def per_class(arrays: ImageArrays, count: int) -> ImageArrays:
        # In class order, so that sorted-folder order equals this order.
        picked = [np.flatnonzero(arrays.labels == c)[:count] for c in range(arrays.num_classes)]
        return arrays.take(np.concatenate(picked))

    subset = per_class(cifar_small[0], 3)
    _write_pngs(tmp_path / "train", subset)
    _write_pngs(tmp_path / "test", per_class(cifar_small[1], 2))

    loaded = load_image_folder(tmp_path / "train", image_size=32)
    assert loaded.class_names == tuple(sorted(CIFAR10_CLASSES)) == CIFAR10_CLASSES
    np.testing.assert_array_equal(loaded.images, subset.images)
    np.testing.assert_array_equal(loaded.labels, subset.labels)

    small = load_image_folder(tmp_path / "train", image_size=16)
    assert small.images.shape == (30, 16, 16, 3) and small.images.dtype == np.uint8

    got_train, got_test = load_dataset(tmp_path, image_size=32)
    np.testing.assert_array_equal(got_train.images, subset.images)
    assert len(got_test) == 20


def test_image_folder_centre_crops_non_square_images(tmp_path):
    from PIL import Image

    wide = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    (tmp_path / "only").mkdir()
    Image.fromarray(wide).save(tmp_path / "only" / "a.png")
    loaded = load_image_folder(tmp_path, image_size=32)  # shorter side already 32: no resampling
    np.testing.assert_array_equal(loaded.images[0], wide[:, 16:48])


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_file_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "absent.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="not a recognised dataset layout"):
        load_dataset(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz")


def _save_npz(path: Path, cifar_small, **overrides) -> Path:
    train, test = cifar_small[0].take(np.arange(10)), cifar_small[1].take(np.arange(10))
    arrays = {
        "x_train": train.images,
        "y_train": train.labels,
        "x_test": test.images,
        "y_test": test.labels,
        "class_names": np.array(CIFAR10_CLASSES),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_missing_key(cifar_small, tmp_path):
    path = _save_npz(tmp_path / "d.npz", cifar_small, y_test=None)
    with pytest.raises(DataError, match=r"d\.npz: missing key\(s\) y_test"):
        load_npz(path)


def test_npz_wrong_dtype_and_shape(cifar_small, tmp_path):
    floats = cifar_small[0].images[:10].astype(np.float32)
    path = _save_npz(tmp_path / "f.npz", cifar_small, x_train=floats)
    with pytest.raises(DataError, match=r"f\.npz \(train split\): images must be a uint8"):
        load_npz(path)
    path = _save_npz(tmp_path / "s.npz", cifar_small, x_test=cifar_small[1].images[:10, :, :, 0])
    with pytest.raises(DataError, match=r"\(test split\): images must have shape \(N, H, W, 3\)"):
        load_npz(path)
    path = _save_npz(tmp_path / "l.npz", cifar_small, y_train=np.full(10, 10))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        load_npz(path)


def test_npz_accepts_any_integer_label_dtype(cifar_small, tmp_path):
    labels = cifar_small[0].labels[:10]
    train, _ = load_npz(_save_npz(tmp_path / "i.npz", cifar_small, y_train=labels.astype(np.uint8)))
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.labels, labels)


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_val_fraction(cifar_small, val_fraction):
    with pytest.raises(DataError, match="val_fraction must be strictly between 0 and 1"):
        split_train_val(cifar_small[0], val_fraction, seed=0)


# ---------------------------------------------------------------------------------------------
# Train/val split


def test_split_is_stratified_deterministic_and_partitions(cifar_small):
    labels = cifar_small[0].labels
    train_idx, val_idx = split_indices(labels, 0.1, seed=0)
    assert np.bincount(labels[val_idx]).tolist() == [50] * 10
    assert np.bincount(labels[train_idx]).tolist() == [450] * 10
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(5000))

    again = split_indices(labels, 0.1, seed=0)
    np.testing.assert_array_equal(again[1], val_idx)
    assert not np.array_equal(split_indices(labels, 0.1, seed=1)[1], val_idx)

    mini_train, mini_val = split_train_val(cifar_small[0], 0.1, seed=0)
    np.testing.assert_array_equal(mini_val.images, cifar_small[0].images[val_idx])
    np.testing.assert_array_equal(mini_train.labels, labels[train_idx])
    assert mini_val.class_names == CIFAR10_CLASSES


# ---------------------------------------------------------------------------------------------
# Augmentation and normalisation


@pytest.fixture(scope="module")
def batch(cifar_small) -> torch.Tensor:
    return torch.from_numpy(cifar_small[0].images[:64].copy())


def test_centre_crop_without_flip_is_identity_and_flip_mirrors(batch):
    pad = 4
    centre = torch.full((len(batch),), pad)
    no_flip = torch.zeros(len(batch), dtype=torch.bool)
    assert torch.equal(crop_and_flip(batch, centre, centre, no_flip, pad), batch)
    assert torch.equal(crop_and_flip(batch, centre, centre, ~no_flip, pad), batch.flip(2))
    zero = torch.zeros(len(batch), dtype=torch.long)
    assert torch.equal(crop_and_flip(batch, zero, zero, no_flip, 0), batch)
    with pytest.raises(DataError, match="must lie in"):
        crop_and_flip(batch, centre + pad + 1, centre, no_flip, pad)


def test_augmented_images_are_windows_of_the_padded_image(batch):
    pad = 4
    out = augment_batch(batch, torch.Generator().manual_seed(0), pad)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(batch.permute(0, 3, 1, 2), (pad, pad, pad, pad))
    padded = padded.permute(0, 2, 3, 1)
    found = []
    for i in range(16):
        matches = [
            (top, left, flip)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            for flip in (False, True)
            if torch.equal(out[i], _window(padded[i], top, left, flip, 32))
        ]
        assert matches, f"sample {i} is not a (flipped) window of its padded image"
        found.append(matches[0])
    assert len({(top, left) for top, left, _ in found}) > 1, "offsets should vary"
    assert len({flip for *_, flip in found}) == 2, "both flipped and unflipped samples expected"


def _window(padded: torch.Tensor, top: int, left: int, flip: bool, size: int) -> torch.Tensor:
    window = padded[top : top + size, left : left + size]
    return window.flip(1) if flip else window


def test_augment_is_deterministic_given_generator(batch):
    first = augment_batch(batch, torch.Generator().manual_seed(7), 4)
    second = augment_batch(batch, torch.Generator().manual_seed(7), 4)
    assert torch.equal(first, second)


def test_normalize_is_channels_last_and_centred(cifar_small):
    images = torch.from_numpy(cifar_small[0].images)
    x = normalize(images, CIFAR10_MEAN, CIFAR10_STD)
    assert x.shape == (5000, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.01
    assert ((x.std(dim=(0, 2, 3)) - 1).abs() < 0.05).all()
    expected = (images[0, 5, 7].float() / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(
        CIFAR10_STD
    )
    torch.testing.assert_close(x[0, :, 5, 7], expected)


# ---------------------------------------------------------------------------------------------
# BatchLoader


def _epoch(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_train_batches(cifar_small):
    loader = BatchLoader(cifar_small[0], 128, train=True, seed=0)
    assert len(loader) == 5000 // 128  # drop_last defaults to train
    batches = _epoch(loader, 0)
    assert len(batches) == len(loader)
    x, y = batches[0]
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert y.shape == (128,) and y.dtype == torch.int64


def test_loader_is_deterministic_per_seed_and_epoch(cifar_small):
    def make(seed: int) -> BatchLoader:
        return BatchLoader(cifar_small[0], 500, train=True, seed=seed)

    first, again = _epoch(make(0), 3), _epoch(make(0), 3)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_epoch, other_seed = _epoch(make(0), 4), _epoch(make(1), 3)
    assert not torch.equal(first[0][1], other_epoch[0][1])
    assert not torch.equal(first[0][1], other_seed[0][1])


def test_each_pass_is_the_next_epoch_and_set_epoch_replays_one(cifar_small):
    loader = BatchLoader(cifar_small[0], 500, train=True, seed=0)
    passes = [[y for _, y in loader] for _ in range(3)]  # epochs 0, 1, 2 without set_epoch
    assert not torch.equal(passes[0][0], passes[1][0])
    assert not torch.equal(passes[1][0], passes[2][0])
    replay = _epoch(BatchLoader(cifar_small[0], 500, train=True, seed=0), 1)
    assert all(torch.equal(a, y) for a, (_, y) in zip(passes[1], replay, strict=True))


@pytest.mark.parametrize("train", [True, False])
def test_loader_covers_every_example_once(train):
    # Unique labels identify the examples after shuffling and augmentation.
    count = 300
    images = np.random.default_rng(0).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    arrays = ImageArrays(images, np.arange(count), tuple(f"c{i}" for i in range(count)))
    loader = BatchLoader(arrays, 64, train=train, seed=0, drop_last=False)
    batches = _epoch(loader, 2)
    assert len(batches) == len(loader) == 5
    assert [len(y) for _, y in batches] == [64, 64, 64, 64, 44]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(count))
    in_order = seen.tolist() == list(range(count))
    assert in_order != train  # shuffled only when training
    assert len(BatchLoader(arrays, 64, train=train, drop_last=True)) == 4


def test_eval_loader_is_plain_normalised_data(cifar_small):
    test = cifar_small[1]
    loader = BatchLoader(test, 256, train=False)
    assert len(loader) == 4 and not loader.drop_last
    x = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(x, normalize(torch.from_numpy(test.images)))
    assert x.mean().abs() < 0.05


def test_loader_rejects_bad_arguments(cifar_small):
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(cifar_small[0], 0, train=True)
    with pytest.raises(DataError, match="epoch would be empty"):
        BatchLoader(cifar_small[1], 2000, train=True)
    with pytest.raises(DataError, match="pad"):
        BatchLoader(cifar_small[0], 8, train=True, pad=-1)


def test_a_read_only_dataset_is_shared_not_copied_and_batches_the_same(cifar_small):
    """Ray's object store hands workers read-only arrays: the loader must not copy them."""
    train = cifar_small[0].take(np.arange(256))
    frozen = train.take(np.arange(256))
    frozen.images.setflags(write=False)
    shared = BatchLoader(frozen, 64, train=True, seed=3)
    assert shared.images.data_ptr() == frozen.images.__array_interface__["data"][0]
    own = BatchLoader(train, 64, train=True, seed=3)
    for (x_a, y_a), (x_b, y_b) in zip(shared, own, strict=True):
        assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
