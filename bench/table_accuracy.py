"""Accuracy and cost of the shipped latency tables on host:tflite.

For each table in latency_tables/ (input 224 and 32):

* accuracy against whole networks measured with the table protocol (3 passes in fresh processes,
  shuffled, min over passes): on real litert-torch exports (as many as are converted in the
  cache; conversion takes 13-120 s each on this shared VM) and on the direct writer's identical
  graphs (`--direct-n`, default 200);
* the measurement noise floor: the same networks measured twice (pass 1 vs the min of passes 2-3)
  agree within +-5% / +-10% for this share: no predictor can beat that against one measurement;
* real export vs direct graph: latency ratio of the same archs, measured side by side;
* prediction cost per arch (median over interleaved repeats), layer variants and build time.

Resumable: measurements are kept in --work-dir (state files), so a rerun only times what is new.

    python bench/table_accuracy.py --work-dir /work/notes/tables/val --direct-n 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._report import write_section  # noqa: E402
from device_bench.table_build import sample_archs, space_from_header, validate_table  # noqa: E402
from latency_tables.keys import space_keys  # noqa: E402
from latency_tables.table import LatencyTable  # noqa: E402

TABLES = ("host_tflite_mnas-imagenet_224.csv", "host_tflite_mnas-cifar_32.csv")


def converted_prefix(space, seed: int, limit: int, cache_dir: Path) -> int:
    """How many of the first `limit` validation archs already have a real export cached."""
    from models.export.cache import cached_bundle

    count = 0
    for arch in sample_archs(space, limit, seed):
        if not (cached_bundle(cache_dir, arch, "tflite") / "metadata.json").is_file():
            break
        count += 1
    return count


def noise_floor(state_path: Path, archs: list[str]) -> dict:
    """Agreement of pass 0's min with the min of passes 1.. for the same networks."""
    state = json.loads(state_path.read_text())
    passes = state["passes"]
    errors = []
    for arch in archs:
        found = [passes[p][arch]["min_ms"] for p in sorted(passes) if arch in passes[p]]
        if len(found) >= 3:
            errors.append(abs(found[0] / min(found[1:]) - 1))
    if not errors:
        return {}
    return {
        "n": len(errors),
        "within_5": sum(e <= 0.05 for e in errors) / len(errors),
        "within_10": sum(e <= 0.10 for e in errors) / len(errors),
        "rmspe": (sum(e * e for e in errors) / len(errors)) ** 0.5,
    }


def prediction_cost_us(
    table: LatencyTable, space, repeats: int = 5, count: int = 500
) -> tuple[float, float]:
    """(wall, thread CPU) microseconds per `predict_ms`, medians over interleaved repeats."""
    archs = sample_archs(space, count, 99)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for arch in archs:
            table.predict_ms(arch)
        wall.append((time.perf_counter() - start) / count * 1e6)
        cpu.append((time.thread_time() - start_cpu) / count * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def side_by_side(space, n: int, seed: int, cache_dir: Path, state: Path) -> dict:
    """Real export vs direct graph of the same archs, measured in the same passes (interleaved
    batches, shuffled), so machine drift between runs cannot pose as a file difference."""
    from device_bench.backends import backend_from_spec
    from device_bench.measurement import fingerprint_id
    from device_bench.table_build import network_files
    from device_bench.table_measure import NETWORK_SETTINGS
    from device_bench.table_runs import MeasureRun

    archs = sample_archs(space, n, seed)
    real = network_files(archs, cache_dir, lambda _n: None, "litert")
    direct = network_files(archs, cache_dir, lambda _n: None, "direct")
    files = {f"real:{a}": path for a, path in real.items()}
    files.update({f"direct:{a}": path for a, path in direct.items()})
    device = fingerprint_id(backend_from_spec("host:tflite", NETWORK_SETTINGS).fingerprint())
    run = MeasureRun(state, device, {"side_by_side": True, "n": n, "seed": seed})
    run.measure("host:tflite", [(files, NETWORK_SETTINGS)], 3, batch=20)
    ratios = []
    for arch in real:
        a = min(m.min_ms for m in run.measurements(f"direct:{arch}", 3))
        b = min(m.min_ms for m in run.measurements(f"real:{arch}", 3))
        ratios.append(a / b)
    return {
        "n": len(ratios),
        "median_ratio": statistics.median(ratios),
        "within_5": sum(abs(x - 1) <= 0.05 for x in ratios) / len(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/work/notes/tables/val"))
    parser.add_argument("--cache-dir", type=Path, default=Path("/work/notes/tables/cache"))
    parser.add_argument("--direct-n", type=int, default=200)
    parser.add_argument("--real-limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    for name in TABLES:
        path = ROOT / "latency_tables" / name
        if not path.is_file():
            print(f"skip {name}: not built yet", file=sys.stderr)
            continue
        table = LatencyTable.load(path)
        space = space_from_header(table.space)
        size = space.input_size
        reports = {}
        real_n = converted_prefix(space, args.seed, args.real_limit, args.cache_dir)
        for networks, n in (("direct", args.direct_n), ("litert", real_n)):
            if n == 0:
                continue
            state = args.work_dir / f"{path.stem}.{networks}.seed{args.seed}.state.json"
            started = time.perf_counter()
            report = validate_table(
                table, "host:tflite", n, args.seed, cache_dir=args.cache_dir,
                state_path=state, networks=networks,
            )  # fmt: skip
            report["seconds"] = time.perf_counter() - started
            report["noise_floor"] = noise_floor(state, [r["arch"] for r in report["archs"]])
            reports[networks] = report
            out = ROOT / "latency_tables" / f"{path.stem}.validation.{networks}.json"
            out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"{name} {networks}: n={report['n']} within5={report['within_5']:.3f} "
                  f"within10={report['within_10']:.3f} rmspe={report['rmspe']:.4f}",
                  file=sys.stderr)  # fmt: skip
        cost = prediction_cost_us(table, space)
        keys = len(space_keys(space))
        protocol = table.header.get("protocol", {})
        build_s = table.header.get("build_seconds")
        for networks, report in reports.items():
            floor = report["noise_floor"]
            rows.append(
                f"| {size} | {networks} | {report['n']} | {report['within_5']:.1%} | "
                f"{report['within_10']:.1%} | {report['rmspe']:.2%} | "
                f"{report['mean_error']:+.2%} | {report['median_pass_spread']:.1%} | "
                f"{floor.get('within_5', float('nan')):.1%} / "
                f"{floor.get('within_10', float('nan')):.1%} | "
                f"{report['load_avg_1min_median']:.1f} | {cost[0]:.0f} / {cost[1]:.0f} |"
            )
        cross = {}
        if real_n:
            state = args.work_dir / f"{path.stem}.side_by_side.seed{args.seed}.n{real_n}.state.json"
            cross = side_by_side(space, real_n, args.seed, args.cache_dir, state)
        worst = reports.get("direct", reports.get("litert"))
        worst_text = ", ".join(
            f"{w['error']:+.1%} ({w['measured_ms']:.2f} ms)" for w in worst["worst"][:3]
        )
        notes.append(
            f"Input {size} ({space.name}, {space.num_classes} classes): {keys} layer variants "
            f"(stem, layers, head); build {build_s / 60:.0f} min"
            if build_s
            else f"Input {size}: {keys} layer variants"
        )
        notes[-1] += (
            f"; correction scale {table.correction.scale:.3f}, offset "
            f"{table.correction.offset_ms:+.3f} ms (fit on {table.correction.fit.get('networks')}"
            f" direct networks, seed {table.correction.fit.get('seed')}; fit RMSPE "
            f"{table.correction.fit.get('fit_rmspe', 0):.2%}); median load while building "
            f"{protocol.get('load_avg_1min_median', float('nan')):.1f}. Worst: {worst_text}."
        )
        if cross:
            notes[-1] += (
                f" Same archs, direct graph vs real export measured side by side (same "
                f"passes, interleaved): median latency ratio "
                f"{cross['median_ratio']:.3f}, {cross['within_5']:.0%} within +-5% (n="
                f"{cross['n']})."
            )
    header = (
        "| input | networks | n | within +-5% | within +-10% | RMSPE | mean error | "
        "median pass spread | single-pass repeatability +-5% / +-10% | load (1 min) | "
        "predict us/arch (wall / CPU) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    table_md = header + "\n" + "\n".join(rows)
    print(table_md)
    common = (
        "Measured = min over 3 passes (each a fresh process, shuffled order, >= 10 invokes and "
        ">= 0.05 s per visit) of the fastest invoke, timed in CPU time of the invoking thread "
        "(1 runtime thread: XNNPACK computes on the caller's thread); predicted = scale * "
        "sum(table entries) + offset. 'litert' networks are real `latency_artifact` exports "
        "(litert-torch; as many as could be converted in the time, 25-120 s each on the "
        "loaded VM); 'direct' are `layer_writer.write_network` graphs, op for op the same ops, "
        "shapes and options as the real exports (checked on every real export in the cache). "
        "'Single-pass repeatability' = share of networks whose pass-1 min agrees with the min "
        "of passes 2-3 within +-5% / +-10%: what one pass of measurement would give, and why "
        "the protocol takes the min over passes. The VM (2 vCPUs) was shared with 3 other "
        "helpers (training, test suites) throughout, load 7-11; all my jobs ran under "
        "`nice -n 10`. A first attempt timed wall-clock invokes: at that load the fastest of "
        "30 wall-clock invokes of a 20 ms network was 3-7x its compute time and the 32 px "
        "table's calibration fit had 18% RMSPE, so the protocol switched to thread CPU time "
        "(fit RMSPE 4.7%). Correction model: scale + offset had the lowest leave-one-out "
        "RMSPE on the 20 calibration networks of both tables (5.0% / 5.4%; scale-only "
        "5.6% / 5.9%, median ratio 5.9% / 5.8%)."
    )
    if not args.no_write:
        write_section(
            "Latency table accuracy (host:tflite)",
            "python bench/table_accuracy.py --direct-n " + str(args.direct_n),
            table_md,
            notes=common + "\n\n" + "\n\n".join(notes),
        )


if __name__ == "__main__":
    main()
