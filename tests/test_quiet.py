"""Third-party noise (absl, oneDNN, torch deprecations, LiteRT's XNNPACK line) is hidden by
`pearl` and comes back with `pearl -v`; our own notes and real errors always show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from models.quiet import QUIET_ENV, is_noise, native_noise_filtered

REPO = Path(__file__).resolve().parents[1]
TINY = "in32_cls10|stem_k3_s1_c8_re|ds_k3_s1_se0_id_c8_n1_re|head_c0_re"
XNNPACK_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def _pearl(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PEARL_CACHE_DIR": str(cache)}
    for name in (QUIET_ENV, "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_pearl_hides_library_noise_unless_verbose(tmp_path):
    # a fresh cache, so the arch is exported: the converter loads (absl, oneDNN, torch) and
    # LiteRT creates its XNNPACK delegate (parity check, then timing)
    quiet = _pearl("bench", TINY, "--runs", "10", "--no-cache", "--json", cache=tmp_path / "a")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["runs"] >= 1
    assert "exporting" in quiet.stderr and "timing" in quiet.stderr  # our own notes stay
    for text in ("absl::InitializeLog", "oneDNN", "_pytree", "XNNPACK delegate", "Estimated count"):
        assert text not in quiet.stderr, quiet.stderr

    loud = _pearl("-v", "bench", TINY, "--runs", "10", "--no-cache", cache=tmp_path / "b")
    assert loud.returncode == 0, loud.stderr
    assert XNNPACK_LINE in loud.stderr.splitlines()
    assert "absl::InitializeLog" in loud.stderr


def test_the_filter_drops_only_the_known_noise(capfd, monkeypatch):
    monkeypatch.setenv(QUIET_ENV, "1")
    with native_noise_filtered():
        os.write(2, f"{XNNPACK_LINE}\nERROR: a real problem\n".encode())
        print("from python", file=sys.stderr)
    held = capfd.readouterr().err
    assert sorted(held.splitlines()) == ["ERROR: a real problem", "from python"]
    assert is_noise(XNNPACK_LINE) and not is_noise("ERROR: a real problem")

    monkeypatch.setenv(QUIET_ENV, "0")  # pearl -v
    with native_noise_filtered():
        os.write(2, f"{XNNPACK_LINE}\n".encode())
    assert capfd.readouterr().err == f"{XNNPACK_LINE}\n"
