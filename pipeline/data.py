"""CIFAR-style image datasets held in memory (batches of them: `pipeline.batches`).

Datasets are small enough (CIFAR-10: 150 MiB as uint8) to live in RAM, so there is no per-image
Dataset/DataLoader machinery.  Loaders read three layouts (`load_dataset` picks one by looking at
the path):

- a ``.npz`` archive with ``x_train``/``y_train``/``x_test``/``y_test``/``class_names``;
- torchvision's extracted ``cifar-10-batches-py`` folder;
- an ImageFolder tree, ``root/{train,test}/<class>/<image>``.

Every problem with the input raises `DataError` (a `ValueError`) saying which file, what is wrong
and what to do about it.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

DATA_DIR_ENV = "PEARL_DATA"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FOLDER_NAME = "cifar-10-batches-py"


class DataError(ValueError):
    """The data on disk or a data-loading argument is unusable; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# In-memory dataset


@dataclass(frozen=True, eq=False)
class ImageArrays:
    """A labelled image set in memory: ``images`` uint8 (N, H, W, 3) RGB, ``labels`` int64 (N,)
    with values in ``range(len(class_names))``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_arrays(self.images, self.labels, self.class_names, source="ImageArrays")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, indices: np.ndarray) -> ImageArrays:
        """The examples at `indices`, in that order (copies the pixels)."""
        return ImageArrays(self.images[indices], self.labels[indices], self.class_names)


def _check_arrays(images, labels, class_names, *, source: str) -> None:
    def fail(problem: str) -> DataError:
        return DataError(f"{source}: {problem}")

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise fail(
            f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images))}; "
            "store raw 0-255 pixels (normalisation happens in the loader)"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise fail(f"images must have shape (N, H, W, 3) RGB, got {images.shape}")
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
        raise fail(f"labels must be an int64 numpy array, got {getattr(labels, 'dtype', labels)}")
    if labels.shape != (len(images),):
        raise fail(f"labels must have shape ({len(images)},) to match images, got {labels.shape}")
    if not class_names or not all(isinstance(name, str) for name in class_names):
        raise fail(f"class_names must be a non-empty sequence of str, got {class_names!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise fail(
            f"labels must lie in [0, {len(class_names)}) for {len(class_names)} class names, "
            f"got [{labels.min()}, {labels.max()}]"
        )


def default_data_dir() -> Path:
    """Where the shared datasets live: ``$PEARL_DATA`` if set (relative to the current
    directory), else ``../shared/data`` beside the repository checkout.  May not exist."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    repo_root = Path(__file__).resolve().parents[1]
    return (repo_root.parent / "shared" / "data").resolve()


# --------------------------------------------------------------------------------------------
# Loaders


def load_npz(path: str | os.PathLike) -> tuple[ImageArrays, ImageArrays]:
    """Read ``(train, test)`` from an .npz with keys ``x_train`` uint8 (N, H, W, 3), ``y_train``
    integer (N,), ``x_test``, ``y_test`` and ``class_names`` (strings).  No pickle is used."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path or set ${DATA_DIR_ENV}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {', '.join(missing)} "
                    f"(has {', '.join(archive.files)}); the archive needs {', '.join(NPZ_KEYS)}"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as error:
        # AttributeError: np.load returned a bare .npy array, which has no `.files`.
        raise DataError(
            f"{path}: not a readable .npz archive of plain arrays ({error}); "
            "write it with np.savez(..., x_train=..., y_train=..., x_test=..., y_test=..., "
            "class_names=np.array([...]))"
        ) from error

    names = arrays["class_names"]
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise DataError(
            f"{path}: class_names must be a 1-D array of strings, got dtype {names.dtype} "
            f"shape {names.shape}"
        )
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    train = _arrays_from_file(arrays["x_train"], arrays["y_train"], class_names, path, "train")
    test = _arrays_from_file(arrays["x_test"], arrays["y_test"], class_names, path, "test")
    return train, test


def _arrays_from_file(images, labels, class_names, path: Path, split: str) -> ImageArrays:
    """Validate one split read from `path`, accepting any integer label dtype."""
    if labels.dtype.kind in "iu":
        labels = labels.astype(np.int64, copy=False)
    _check_arrays(images, labels, class_names, source=f"{path} ({split} split)")
    return ImageArrays(np.ascontiguousarray(images), labels, class_names)


def load_cifar_folder(path: str | os.PathLike) -> tuple[ImageArrays, ImageArrays]:
    """Read ``(train, test)`` from torchvision's extracted ``cifar-10-batches-py`` folder
    (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``).

    These files are Python pickles, which can run code when loaded: only use folders you trust.
    """
    folder = Path(path)
    if (folder / CIFAR_FOLDER_NAME).is_dir():
        folder = folder / CIFAR_FOLDER_NAME
    needed = (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: not a complete cifar-10-batches-py folder, missing {', '.join(missing)}; "
            "extract cifar-10-python.tar.gz there"
        )
    meta = _read_pickle(folder / "batches.meta", needed_keys=(b"label_names",))
    class_names = tuple(name.decode() for name in meta[b"label_names"])
    train_parts = [_read_cifar_batch(folder / name) for name in CIFAR_TRAIN_BATCHES]
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    return (
        _arrays_from_file(train_images, train_labels, class_names, folder, "train"),
        _arrays_from_file(test_images, test_labels, class_names, folder, "test"),
    )


def _read_pickle(path: Path, needed_keys: Sequence[bytes]) -> dict:
    try:
        with path.open("rb") as f:
            content = pickle.load(f, encoding="bytes")
    except Exception as error:  # a corrupt pickle can raise almost anything
        raise DataError(f"{path}: cannot unpickle ({error!r}); re-extract the archive") from error
    if not isinstance(content, dict) or any(key not in content for key in needed_keys):
        raise DataError(
            f"{path}: expected a dict with keys {[k.decode() for k in needed_keys]}; "
            "is this really a CIFAR-10 python batch file?"
        )
    return content


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: (N, 3072) uint8 rows, each R then G then B planes of 32x32 -> NHWC."""
    batch = _read_pickle(path, needed_keys=(b"data", b"labels"))
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(batch[b"labels"], dtype=np.int64)


def load_image_folder(path: str | os.PathLike, image_size: int) -> ImageArrays:
    """Read an ImageFolder tree (``path/<class>/<image>``, classes in sorted order, images in
    sorted file-name order) with PIL, each resized so its shorter side is `image_size` pixels and
    centre-cropped to `image_size` x `image_size`.  Images already that size are not resampled."""
    from PIL import Image  # only this loader needs PIL

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; expected {root}/<class name>/<image files>")
    if image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class subfolders; expected {root}/<class name>/<image files>")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        class_files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not class_files:
            raise DataError(
                f"{class_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "remove the folder or add images"
            )
        files += [(file, label) for file in class_files]

    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as image:
                images[i] = _resize_center_crop(image.convert("RGB"), image_size)
        except OSError as error:
            raise DataError(f"{file}: cannot read image ({error}); delete or replace it") from error
    labels = np.array([label for _, label in files], dtype=np.int64)
    return ImageArrays(images, labels, tuple(d.name for d in class_dirs))


def _resize_center_crop(image, size_px: int) -> np.ndarray:
    from PIL import Image

    width, height = image.size
    scale = size_px / min(width, height)
    new_size = (max(size_px, round(width * scale)), max(size_px, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    left = round((new_size[0] - size_px) / 2)
    top = round((new_size[1] - size_px) / 2)
    return np.asarray(image.crop((left, top, left + size_px, top + size_px)))


def load_dataset(
    path: str | os.PathLike, *, image_size: int = 32
) -> tuple[ImageArrays, ImageArrays]:
    """Read ``(train, test)`` from whichever supported layout `path` is:

    - an ``.npz`` file (`load_npz`);
    - a ``cifar-10-batches-py`` folder, or a folder containing one (`load_cifar_folder`);
    - a folder with ``train/`` and ``test/`` (or ``val/``) ImageFolder trees
      (`load_image_folder`, resized to `image_size`; `image_size` is ignored otherwise).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path}: does not exist; check the path (in a config, relative paths are taken "
            f"from the config file's folder and ${DATA_DIR_ENV}/NAME means NAME in "
            f"{default_data_dir()}; set ${DATA_DIR_ENV} to move that folder)"
        )
    if path.is_file():
        if path.suffix == ".npz":
            return load_npz(path)
        raise DataError(f"{path}: unsupported file type; give an .npz archive or a folder")
    if (path / "batches.meta").is_file() or (path / CIFAR_FOLDER_NAME).is_dir():
        return load_cifar_folder(path)
    test_dir = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and test_dir is not None:
        train = load_image_folder(path / "train", image_size)
        test = load_image_folder(test_dir, image_size)
        if test.class_names != train.class_names:
            raise DataError(
                f"{path}: train/ and {test_dir.name}/ have different class folders "
                f"({train.class_names} vs {test.class_names}); they must match"
            )
        return train, test
    raise DataError(
        f"{path}: not a recognised dataset layout; expected an .npz file, a cifar-10-batches-py "
        "folder, or train/<class>/<image> plus test/<class>/<image> (for a single ImageFolder "
        "without a test split use load_image_folder and split_train_val)"
    )


# --------------------------------------------------------------------------------------------
# Splits and statistics


def split_indices(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of ``range(len(labels))`` into sorted (train, val) index arrays:
    each class contributes ``round(val_fraction * class size)`` examples to val."""
    if not 0.0 < val_fraction < 1.0:  # also rejects NaN
        raise DataError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        val_parts.append(rng.permutation(members)[: round(len(members) * val_fraction)])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    is_train = np.ones(len(labels), dtype=bool)
    is_train[val] = False
    train = np.flatnonzero(is_train)
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"val_fraction {val_fraction} of {len(labels)} examples leaves an empty "
            f"{'val' if len(val) == 0 else 'train'} split; choose a fraction nearer 0.5"
        )
    return train, val


def split_train_val(
    arrays: ImageArrays, val_fraction: float, seed: int
) -> tuple[ImageArrays, ImageArrays]:
    """Hold out a stratified `val_fraction` of `arrays` as a mini-val set (AKD's search signal).
    Same seed, same split; both halves keep the original example order."""
    train, val = split_indices(arrays.labels, val_fraction, seed)
    return arrays.take(train), arrays.take(val)


def channel_mean_std(
    arrays: ImageArrays, chunk_images: int = 1024
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population standard deviation of the pixels, in [0, 1] units."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(arrays), chunk_images):
        pixels = arrays.images[start : start + chunk_images].reshape(-1, 3).astype(np.float64)
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
    count = arrays.images.shape[0] * arrays.images.shape[1] * arrays.images.shape[2]
    if count == 0:
        raise DataError("cannot compute channel statistics of an empty ImageArrays")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
