"""`pantau bench ingest --quick` runs end to end (numbers are not asserted: a benchmark, not a
timed test), and Pantau's rows show nothing lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_reports_all_rows_and_no_loss(admin_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pantau", "bench", "ingest", "--quick", "--json", "--rounds", "2",
         "--database-url", admin_url],
        capture_output=True, text=True, timeout=880, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {row["key"]: row for row in result["rows"]}
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    for key in "abcde":
        assert rows[key]["readings"] > 0 and rows[key]["readings_per_s"] > 0
        # Timed from real events: no scenario stores its readings in under 10 ms.
        assert rows[key]["readings"] / rows[key]["readings_per_s"] > 0.01
    for key in "de":
        assert rows[key]["lost"] == 0 and rows[key]["duplicated"] == 0
        assert rows[key]["p99_s"] is not None
    # Two rounds: (b) twice and two drains of (e), each reported, the medians counted.
    assert rows["e"]["readings"] == 2 * 600 * 50
    assert any(note.startswith("drains of ") for note in rows["e"]["notes"])
    assert any(note.startswith("runs of ") for note in rows["b"]["notes"])
    assert {t["name"] for t in result["targets"]} >= {"(d) >= 0.75 x (a)", "(e) >= 0.35 x (b)"}
    assert result["machine"]["cores"]
