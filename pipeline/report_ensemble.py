"""The report section of an ensemble teacher: each member's top-1, the ensemble's (logit
average), its oracle accuracy and the share of images by number of correct members (KDAS
Table 5), read from the statistics file beside the ensemble spec (`pipeline.ensemble_stats`;
a report never computes logits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.files import read_json
from pipeline.report_text import binomial_se_pp, markdown_table


def statistics_markdown(stats: dict[str, Any], member_names: list[str] | None = None) -> str:
    """Two markdown tables: accuracies (members, ensemble, oracle; with binomial s.e.) and the
    Table 5 shares by number of correct members."""
    images, members = stats["images"], stats["members"]
    names = member_names or stats.get("member_names") or [f"member {j + 1}" for j in range(members)]
    accuracies = [*zip(names, stats["member_top1"], strict=True)]
    accuracies += [
        ("ensemble (logit average)", stats["ensemble_top1"]),
        ("oracle (any member right)", stats["oracle_top1"]),
    ]
    rows = [
        (name, f"{100 * top1:.2f}", f"{binomial_se_pp(top1, images):.2f}")
        for name, top1 in accuracies
    ]
    shares = [f"{100 * share:.1f}%" for share in stats["correct_members_share"]]
    return "\n".join(
        [
            markdown_table(("teacher", "top-1 %", "s.e."), rows),
            "",
            f"Images by number of members that classify them correctly ({images} images):",
            "",
            markdown_table([str(k) for k in range(members + 1)], [shares]),
        ]
    )


def ensemble_section(teacher_spec: str) -> list[str]:
    """Report lines for the ensemble files in `teacher_spec` (none when it has none): their
    statistics tables, or the command that computes them."""
    from models.ensembles import is_ensemble_file
    from pipeline.ensemble_stats import statistics_paths

    lines: list[str] = []
    for part in (p.strip() for p in teacher_spec.split(",")):
        if not part or not is_ensemble_file(part):
            continue
        json_path, _ = statistics_paths(part)
        stats = read_json(json_path)
        lines += [f"## Ensemble teacher `{Path(part).name}`", ""]
        if stats is None:
            lines += [
                f"No statistics beside {part} yet: `pearl teacher stats {part} --data DATA` "
                "writes them.",
                "",
            ]
            continue
        lines += [
            f"On the {stats.get('split', 'test')} split of `{stats.get('data', '?')}` "
            f"(`{json_path.name}`):",
            "",
            statistics_markdown(stats),
            "",
        ]
    return lines
