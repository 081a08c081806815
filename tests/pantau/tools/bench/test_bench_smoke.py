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


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pages_bench_reports_the_browsers_paint_timing(admin_url: str) -> None:
    """`pantau bench pages` runs end to end in Chromium; its times are the browser's, not
    asserted against the target (a benchmark, not a timed test)."""
    pytest.importorskip("playwright.sync_api")
    done = subprocess.run(
        [sys.executable, "-m", "pantau", "bench", "pages", "--json", "--rounds", "1",
         "--database-url", admin_url],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    if done.returncode != 0 and "Chromium is not installed" in done.stderr:
        pytest.skip("Chromium is not installed")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sensors"] == 48 and result["readings"] > 0
    assert [row["path"] for row in result["rows"]] == ["/", "/control"]
    for row in result["rows"]:
        (paint,) = row["first_paint_ms"]
        (drawn,) = row["drawn_ms"]
        assert paint > 0 and drawn > 0
