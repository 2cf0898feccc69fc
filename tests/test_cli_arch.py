"""`pearl arch ...` from the command line."""

import json
import subprocess
import sys

from click.testing import CliRunner

from models.arch import Arch
from pipeline.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_installed_console_script_shows_help_without_heavy_imports():
    code = (
        "import sys\n"
        "from pipeline.cli import cli\n"
        "cli(['--help'], standalone_mode=False)\n"
        "heavy = ('torch', 'onnxruntime', 'litert_torch', 'adb_shell')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "arch" in out.stdout and "HEAVY []" in out.stdout
    assert subprocess.run(["pearl", "--help"], capture_output=True).returncode == 0


def test_sample_prints_n_valid_distinct_deterministic_archs():
    first = run("arch", "sample", "--n", "5", "--seed", "3").output.split()
    assert len(first) == 5 and len(set(first)) == 5
    assert all(Arch.decode(line).input_size == 32 for line in first)
    assert run("arch", "sample", "--n", "5", "--seed", "3").output.split() == first
    big = run("arch", "sample", "--n", "2", "--input", "224", "--classes", "1000").output.split()
    assert Arch.decode(big[0]).stem.stride == 2


def test_describe_json_for_a_baseline_and_for_an_arch_string():
    result = run("arch", "describe", "mobilenet_v2", "--json")
    summary = json.loads(result.output)
    assert summary["params"] == 3_504_872 and 300e6 < summary["macs"] < 302e6
    assert summary["key"] == Arch.decode(summary["arch"]).key()
    again = json.loads(run("arch", "describe", summary["arch"], "--json").output)
    assert again == summary
    cifar = json.loads(
        run(
            "arch", "describe", "mobilenet_v2_0.5", "--input", "32", "--classes", "10", "--json"
        ).output
    )
    assert cifar["num_classes"] == 10 and cifar["arch"].startswith("in32_cls10|stem_k3_s1_")


def test_describe_table_lists_every_layer():
    result = run("arch", "describe", "mnasnet_a1")
    assert result.exit_code == 0
    assert "3.887 M" in result.output and result.output.count(" mb6 ") == 12


def test_bad_inputs_give_clear_errors_not_tracebacks():
    result = run(
        "arch", "describe", "in32_cls10|stem_k3_s1_c32_re|mb6_k4_s1_se0_id_c24_n2_re|head_c8_re"
    )
    assert result.exit_code == 2
    assert "token 'k4' at character 33" in result.output and "Traceback" not in result.output
    result = run("arch", "describe", "resnet_9000")
    assert result.exit_code == 2 and "neither a baseline name" in result.output
    text = run("arch", "sample").output.strip()
    result = run("arch", "describe", text, "--input", "224")
    assert result.exit_code == 2 and "contradicts the arch string" in result.output
    result = run("arch", "sample", "--space", "nope")
    assert result.exit_code == 2 and "unknown search space" in result.output


def test_describe_rows_add_up_to_the_totals():
    sampled = run("arch", "sample", "--n", "1", "--seed", "7").output.strip()
    for args in (["mobilenet_v2"], ["mobilenet_v2_0.5", "--input", "32", "--classes", "10"],
                 [sampled]):  # fmt: skip
        summary = json.loads(run("arch", "describe", *args, "--json").output)
        rows = summary["rows"]
        assert [rows[0]["row"], rows[-2]["row"], rows[-1]["row"]] == ["stem", "head", "fc"]
        assert sum(row["macs"] for row in rows) == summary["macs"]
        assert sum(row["params"] for row in rows) == summary["params"]
        blocks = Arch.decode(summary["arch"]).blocks
        assert summary["layers"] == sum(block.layers for block in blocks)


def test_describe_shows_the_skip_applied_se_as_in_the_string_and_labelled_sizes():
    text = "in32_cls10|stem_k3_s1_c16_re|mb3_k3_s2_se25_id_c24_n2_re|head_c0_re"
    summary = json.loads(run("arch", "describe", text, "--json").output)
    first, second = summary["rows"][1:3]
    assert (first["skip_asked"], first["skip"], second["skip"]) == ("id", "noskip", "id")
    assert first["se_percent"] == 25 and (first["input_px"], first["output_px"]) == (32, 16)
    assert [row["row"] for row in summary["rows"]] == ["stem", "1.1", "1.2", "fc"]  # head_c0

    lines = run("arch", "describe", text).output.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["row", "op"])
    assert "se%" in header and "px in" in header and "px out" in header
    first_line = next(line for line in lines if line.split()[0] == "1.1")
    assert first_line.split()[4:6] == ["25", "noskip*"]
    assert lines[-1].startswith("* the block asks for id, but this layer changes its stride")
