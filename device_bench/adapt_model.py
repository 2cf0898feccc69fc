"""The model `pearl tables adapt` fits: how much each entry of a source table is scaled on the
new device.  Pure (numpy for the least squares; no I/O).

An entry's scale is a linear function of its layer's features, with coefficients per *cell*
(a cell is an op group, `op_group`: stem, conv, ds, mb, head; the ``layers`` model splits each
layer group by whether the layer has a pooling shortcut)::

    scale(entry l of cell c) = a_c + sum_f b_cf * (f(l) - center_cf)

(`center_cf`: the mean of feature f over the source's entries of cell c, weighted by their
ms), so a network's latency on the new device is linear in the coefficients::

    measured_n ~ sum_c [a_c * S_c + sum_f b_cf * T_cf] + offset
    S_c = sum of the source entries of cell c in network n,  T_cf = sum of entry * (f - center)

fitted in relative error (each network weighs the same), ridge-regularised towards a_c = the
single scale that fits all and b_cf = 0, so a cell or feature the N networks hardly exercise
stays near a uniform rescaling.  Models (`MODELS`):

* ``groups``: one scale per op group, no features (a device that differs by a near-uniform
  factor per kind of op);
* ``layers``: per op group, pooling-shortcut layers apart, a scale and a slope in log2 of the
  layer's input resolution (an fp32 table adapted to int8 files: the int8/fp32 ratio of a
  layer falls with its resolution and is far higher with a pooling shortcut).  Chosen on
  held-out accuracy, simulated from the shipped tables (BENCHMARKS.md, "Latency table few-shot
  adaptation, simulated from tables").

``auto`` (`fit_best`, the default of `pearl tables adapt`) fits both and keeps the one with the
lower leave-one-out error on the N networks: the per-layer model fits measurement noise where
the device differs by a near-uniform factor, the group scales cannot follow a change of op
profile, and the N networks alone tell which case this is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from latency_tables.keys import LayerKey, arch_keys
from latency_tables.table import LatencyTable, fit_correction
from models.arch import Arch

MIN_SCALE = 0.05  # an entry's fitted scale never goes below this
GROUPS = ("stem", "conv", "ds", "mb", "head")

LAYER_FEATURES: dict[str, Callable[[LayerKey], float]] = {
    "log2_input_size": lambda key: math.log2(key.input_size),
}


class AdaptError(ValueError):
    """Input the adapt fit cannot use (too few networks, no measurements, ...)."""


def op_group(key: LayerKey) -> str:
    return key.kind if key.kind in ("stem", "head") else key.op


@dataclasses.dataclass(frozen=True)
class AdaptModel:
    """Which cells get their own coefficients, the layer features their scale follows, and
    the ridge weights (of (a_c - common scale)^2 and b_cf^2 against the squared relative
    errors of the networks)."""

    name: str
    split_pool: bool
    features: tuple[str, ...]
    ridge_scale: float
    ridge_slope: float
    # refuse fewer networks than coefficients (a model with slopes needs them all measured)
    one_network_per_coefficient: bool

    def cell(self, key: LayerKey) -> str:
        group = op_group(key)
        pool = self.split_pool and key.kind == "layer" and key.skip == "pool"
        return f"{group}+pool" if pool else group

    def raw_terms(self, key: LayerKey) -> dict[str, float]:
        """The column names of `key`'s coefficients and their uncentred multipliers."""
        cell = self.cell(key)
        terms = {cell: 1.0}
        if key.kind == "layer":
            for name in self.features:
                terms[f"{cell}*{name}"] = LAYER_FEATURES[name](key)
        return terms

    def centers(self, source: LatencyTable) -> dict[str, float]:
        """Per slope column: the feature's mean over the source's entries of that cell,
        weighted by their ms."""
        weighted: dict[str, float] = {}
        weights: dict[str, float] = {}
        statistic = source.header["statistic"]
        for key, entry in source.entries.items():
            ms = getattr(entry, statistic)
            for column, value in self.raw_terms(key).items():
                if "*" in column:
                    weighted[column] = weighted.get(column, 0.0) + ms * value
                    weights[column] = weights.get(column, 0.0) + ms
        return {c: weighted[c] / weights[c] for c in weighted if weights[c] > 0}

    def terms(self, key: LayerKey, centers: Mapping[str, float]) -> dict[str, float]:
        """Multipliers of `key`'s coefficients: its scale is sum coefficient * multiplier."""
        return {
            c: v - centers.get(c, 0.0) if "*" in c else v for c, v in self.raw_terms(key).items()
        }


MODELS = {
    "groups": AdaptModel("groups", False, (), 1.0, 0.0, False),
    "layers": AdaptModel("layers", True, ("log2_input_size",), 0.01, 0.1, True),
}
AUTO = "auto"  # the model of MODELS with the lowest leave-one-out error (`fit_best`)
DEFAULT_MODEL = AUTO
MODEL_CHOICES = (AUTO, *MODELS)


def network_columns(
    source: LatencyTable, arch: Arch, model: AdaptModel, centers: Mapping[str, float]
) -> dict[str, float]:
    """S_c and T_cf of `arch` (module docstring) from the source's entries (no correction);
    a key the source lacks raises its `MissingKeyError`."""
    statistic = source.header["statistic"]
    columns: dict[str, float] = {}
    for key in arch_keys(arch):
        ms = getattr(source.entry(key), statistic)
        for column, value in model.terms(key, centers).items():
            columns[column] = columns.get(column, 0.0) + ms * value
    return columns


def used_columns(columns: Sequence[Mapping[str, float]]) -> list[str]:
    """The columns some network exercises, in a stable order."""
    return sorted({c for cols in columns for c, v in cols.items() if v != 0})


def coefficient_count(columns: Sequence[Mapping[str, float]]) -> int:
    """Coefficients a fit on these networks has: one per used column, plus the offset."""
    return len(used_columns(columns)) + 1


def check_networks(model: AdaptModel, columns: Sequence[Mapping[str, float]]) -> None:
    """Raise AdaptError when `model` would fit more coefficients than there are networks."""
    needed = coefficient_count(columns)
    if model.one_network_per_coefficient and len(columns) < needed:
        raise AdaptError(
            f"the {model.name!r} adapt model fits {needed} coefficients on these networks but "
            f"only {len(columns)} were measured: measure at least {needed} (--n {needed}) or "
            "use --model groups (one scale per op group)"
        )


@dataclasses.dataclass(frozen=True)
class Fit:
    model: AdaptModel
    coefficients: dict[str, float]  # column -> a_c (cell name) or b_cf ("cell*feature")
    centers: dict[str, float]
    offset_ms: float
    common_scale: float
    rmspe: float  # on the fitted networks
    networks: int

    def predict_ms(self, columns: Mapping[str, float]) -> float:
        """The linear model's latency for a network's `network_columns` (what the adapted
        table predicts wherever no entry's scale is clipped at MIN_SCALE)."""
        return sum(self.coefficients.get(c, 0.0) * v for c, v in columns.items()) + self.offset_ms

    def entry_scale(self, key: LayerKey) -> float:
        """The factor the source entry `key` is multiplied by (at least MIN_SCALE)."""
        terms = self.model.terms(key, self.centers)
        cell = self.model.cell(key)
        scale = sum(self.coefficients.get(c, 0.0) * v for c, v in terms.items() if c != cell)
        return max(self.coefficients.get(cell, self.common_scale) + scale, MIN_SCALE)


def fit_model(
    columns: Sequence[Mapping[str, float]],
    measured_ms: Sequence[float],
    model: AdaptModel,
    centers: Mapping[str, float],
) -> Fit:
    """Least squares of the module docstring.  Cells no network uses keep the common scale,
    slopes no network exercises stay 0."""
    import numpy as np

    if len(columns) != len(measured_ms) or not columns:
        raise AdaptError("the adapt fit needs one measured latency per network, at least one")
    if any(not m > 0 for m in measured_ms):
        raise AdaptError(f"measured latencies must be positive ms, got {list(measured_ms)}")
    check_networks(model, columns)
    cells = [c for c in used_columns(columns) if "*" not in c]
    common = fit_correction([sum(cols.get(c, 0.0) for c in cells) for cols in columns], measured_ms)
    used = used_columns(columns)
    rows, targets = [], []
    for cols, m in zip(columns, measured_ms, strict=True):
        rows.append([cols.get(c, 0.0) / m for c in used] + [1 / m])
        targets.append(1.0)
    for i, column in enumerate(used):  # ridge rows: scales towards the common one, slopes to 0
        weight = math.sqrt(model.ridge_slope if "*" in column else model.ridge_scale)
        row = [0.0] * (len(used) + 1)
        row[i] = weight
        rows.append(row)
        targets.append(0.0 if "*" in column else weight * common.scale)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
    coefficients = {c: float(v) for c, v in zip(used, solution[:-1], strict=True)}
    fit = Fit(model, coefficients, dict(centers), float(solution[-1]), common.scale, 0.0,
              len(columns))  # fmt: skip
    errors = [fit.predict_ms(c) / m - 1 for c, m in zip(columns, measured_ms, strict=True)]
    return dataclasses.replace(fit, rmspe=math.sqrt(sum(e * e for e in errors) / len(errors)))


def loo_rmspe(
    columns: Sequence[Mapping[str, float]],
    measured_ms: Sequence[float],
    model: AdaptModel,
    centers: Mapping[str, float],
) -> float | None:
    """Leave-one-out RMSPE: each network predicted by the fit on all the others (an estimate
    of the error on unseen networks); None when the model cannot be fitted on N - 1."""
    errors = []
    for i, (cols, m) in enumerate(zip(columns, measured_ms, strict=True)):
        rest = [*columns[:i], *columns[i + 1 :]]
        try:
            fit = fit_model(rest, [*measured_ms[:i], *measured_ms[i + 1 :]], model, centers)
        except AdaptError:
            return None
        errors.append(fit.predict_ms(cols) / m - 1)
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def fit_best(
    source: LatencyTable, archs: Sequence[Arch], measured_ms: Sequence[float], names: Sequence[str]
) -> tuple[Fit, dict[str, float | None]]:
    """Fit each model of `names` whose leave-one-out error can be computed on these networks
    and keep the lowest (the first on a tie: list the simpler first); also returns every
    model's leave-one-out RMSPE (None: too few networks for it)."""
    loo: dict[str, float | None] = {}
    fits: dict[str, Fit] = {}
    for name in names:
        model = MODELS[name]
        centers = model.centers(source)
        columns = [network_columns(source, a, model, centers) for a in archs]
        loo[name] = loo_rmspe(columns, measured_ms, model, centers) if len(archs) > 2 else None
        if loo[name] is not None or len(names) == 1:
            fits[name] = fit_model(columns, measured_ms, model, centers)
    if not fits:
        raise AdaptError(f"none of the adapt models {list(names)} can be fitted on "
                         f"{len(archs)} networks: measure more (--n)")  # fmt: skip
    best = min(fits, key=lambda n: (loo[n] if loo[n] is not None else math.inf, names.index(n)))
    return fits[best], loo


__all__ = [
    "AUTO",
    "DEFAULT_MODEL",
    "MODEL_CHOICES",
    "MODELS",
    "AdaptError",
    "AdaptModel",
    "Fit",
    "check_networks",
    "coefficient_count",
    "fit_best",
    "fit_model",
    "loo_rmspe",
    "network_columns",
    "op_group",
]
