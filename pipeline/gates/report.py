"""What a gate search leaves beside its store (``search/gates/``): ``gates.json`` (the MACs
trajectory, the kept channels per layer, the teacher and the student), ``trajectory.png`` (MACs
and open gates against step) and ``kept.png`` (kept channels of each gated layer against the
teacher's: the paper's Fig. 5, one column per layer)."""

from __future__ import annotations

from pathlib import Path

from models.files import atomic_write_json
from pipeline.report_plots import _pyplot, _save


def write_gate_report(
    folder: Path, engine, target_macs: int, outcome: str, target_ms: float = 0.0
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    groups = engine.helper.layout.groups
    kept = engine.kept_per_group()
    student = engine.shrunk()
    summary = {
        "outcome": outcome,
        "target_macs": target_macs,
        "target_ms": target_ms,
        "teacher": {"arch": engine.network.encode(), "macs": engine.network.cost().macs},
        "student": {"arch": student.encode(), "macs": student.cost().macs},
        "trajectory": [point.__dict__ for point in engine.trajectory],
        "layers": [
            {"name": g.name, "gates": g.stop - g.start, "kept": k}
            for g, k in zip(groups, kept, strict=True)
        ],
    }
    atomic_write_json(folder / "gates.json", summary)
    written = [
        _trajectory(folder / "trajectory.png", engine.trajectory, target_macs, target_ms),
        _kept(folder / "kept.png", summary["layers"]),
    ]
    if hasattr(engine.helper, "connections"):  # DenseNet: which connections are left
        written.append(_connections(folder / "connections.png", engine.helper, engine.keep()))
    return written


def _connections(path: Path, helper, keep) -> Path:
    import numpy as np

    plt = _pyplot()
    matrix = np.array(  # the last part (the classifier) produces nothing: no row for it
        [[np.nan if v is None else v for v in row[:-1]] for row in helper.connections(keep)]
    )
    names = ["stem"] + [f"{p.kind}{i + 1}" for i, p in enumerate(helper.network.parts)]
    size = max(5.0, 0.25 * len(names))
    figure, axis = plt.subplots(figsize=(size, size * 0.85))
    image = axis.imshow(matrix.T, cmap="viridis", vmin=0, vmax=1, origin="lower")
    axis.set_xticks(range(len(names) - 1))
    axis.set_xticklabels(names[1:], rotation=90, fontsize=7)
    axis.set_yticks(range(len(names) - 1))
    axis.set_yticklabels(names[:-1], fontsize=7)
    axis.set_xlabel("reading part (d: dense layer, t: transition, f: classifier)")
    axis.set_ylabel("producing part")
    figure.colorbar(image, ax=axis, label="fraction of the connection's channels kept")
    axis.set_title("Connections left (blank: not in the teacher)", fontsize=10)
    return _save(figure, path)


def report_lines(folder: Path, report_dir: Path) -> list[str]:
    """The gate search's part of ``report.md`` (nothing when `folder` holds no gate search)."""
    import json
    import os

    path = folder / "gates.json"
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())
    where = Path(os.path.relpath(folder, report_dir))
    teacher, student = summary["teacher"], summary["student"]
    return [
        "### Gate search (Gu & Tresp)",
        "",
        f"Outcome: {summary['outcome']}. Teacher `{teacher['arch']}` "
        f"({teacher['macs'] / 1e6:.2f} MMACs); "
        f"student left by the open gates `{student['arch']}` ({student['macs'] / 1e6:.2f} MMACs).",
        "",
        f"![gate trajectory]({where / 'trajectory.png'})",
        "",
        f"![kept channels per layer]({where / 'kept.png'})",
        "",
        *(
            [f"![connections left]({where / 'connections.png'})", ""]
            if (folder / "connections.png").is_file()
            else []
        ),
    ]


def _trajectory(path: Path, trajectory, target_macs: int, target_ms: float = 0.0) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = [p.step for p in trajectory]
    if target_ms:  # a latency target: the predicted latency of the network left
        axis.plot(steps, [p.predicted_ms for p in trajectory], "o-", label="predicted ms")
        axis.axhline(target_ms, color="tab:red", linestyle="--", label="target")
        axis.set_ylabel("predicted latency of the network left (ms)")
    else:
        axis.plot(steps, [p.macs / 1e6 for p in trajectory], "o-", label="network left (MMACs)")
        axis.axhline(target_macs / 1e6, color="tab:red", linestyle="--", label="target")
        axis.set_ylabel("MMACs of the network left")
    axis.set_xlabel("gate step")
    right = axis.twinx()
    right.plot(steps, [p.open_gates for p in trajectory], "s:", color="tab:gray")
    right.set_ylabel("open gates (grey)")
    axis.legend(loc="best")
    axis.set_title("Gate search: cost of the network the open gates leave")
    return _save(figure, path)


def _kept(path: Path, layers: list[dict]) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 0.18 * len(layers)), 4.0))
    positions = range(len(layers))
    axis.bar(positions, [layer["gates"] for layer in layers], color="lightgray", label="teacher")
    fractions = [layer["kept"] / max(1, layer["gates"]) for layer in layers]
    scale = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
    colours = scale.to_rgba(fractions)
    axis.bar(positions, [layer["kept"] for layer in layers], color=colours, label="kept")
    axis.set_xticks(list(positions))
    axis.set_xticklabels([layer["name"] for layer in layers], rotation=90, fontsize=7)
    axis.set_ylabel("channels (gates) of the layer")
    axis.legend(loc="upper left", handles=axis.patches[:1], labels=["teacher"])
    figure.colorbar(scale, ax=axis, label="fraction of the layer's channels kept")
    axis.set_title("Kept channels per gated layer (bar: kept, grey: the teacher's)")
    return _save(figure, path)
