"""Write the outcome of a finished `pearl run` folder into BENCHMARKS.md: wall time, the teacher's
accuracy, and the searched student against the baseline (final top-1 with KD and CE, KD - CE,
AKD's relative gain, fp32 / int8 LiteRT latency on the run's device).

    python bench/run_outcome.py RUN_DIR --title "..." --command "pearl run ..." --wall-s 361
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section  # noqa: E402
from pipeline.layout import RunLayout, is_baseline  # noqa: E402
from pipeline.report_text import kd_gain, markdown_table, relative_gain  # noqa: E402
from pipeline.run_report import trained_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True, help="the pearl run command that made it")
    parser.add_argument("--wall-s", type=float, required=True, help="measured with `time`")
    parser.add_argument("--notes", default="")
    args = parser.parse_args()

    layout = RunLayout(args.run_dir)
    trained = trained_runs(args.run_dir)
    latency = json.loads(layout.latency.read_text())
    summary = json.loads(layout.search.summary.read_text())
    by_file = {(r["label"], r["format"]): r["latency_ms"] for r in latency["rows"]}
    gains = {label: kd_gain(per_loss) for label, per_loss in trained.items()}
    baseline_gain = next((g for k, g in gains.items() if is_baseline(k)), None)
    rows = []
    for label, per_loss in sorted(trained.items(), key=lambda item: is_baseline(item[0])):
        first = next(iter(per_loss.values()))
        rows.append(
            (
                f"`{label}`",
                f"{first['params'] / 1e6:.3f}",
                first["epochs_done"],
                *(f"{100 * per_loss[loss]['top1']:.2f}" for loss in ("kd", "ce")),
                f"{gains[label]:+.2f}",
                "-" if is_baseline(label) else f"{relative_gain(gains[label], baseline_gain):+.2f}",
                f"{by_file.get((label, 'tflite'), float('nan')):.3f}",
                f"{by_file.get((label, 'tflite-int8'), float('nan')):.3f}",
            )
        )
    table = markdown_table(
        [
            "model",
            "params (M)",
            "epochs",
            "top-1 KD (%)",
            "top-1 CE (%)",
            "KD - CE (pp)",
            "relative gain (pp)",
            "fp32 ms",
            "int8 ms",
        ],
        rows,
    )
    teacher = next(m["teacher"] for p in trained.values() for m in p.values() if m["teacher"])
    load = os.getloadavg()[0]
    notes = (
        f"Wall clock {args.wall_s / 60:.1f} min for the whole run; search: "
        f"{summary['candidates']} candidates, {summary['generations']} generations. Teacher "
        f"`{teacher['spec']}`: test top-1 {100 * teacher['top1']:.2f}% on the same split. "
        f"Latency: min over timed runs on `{latency['device']}`. 1-min load average when this "
        f"section was written: {load:.1f}. {args.notes}"
    )
    print(table)
    print(notes)
    write_section(args.title, args.command, table, notes=notes)


if __name__ == "__main__":
    main()
