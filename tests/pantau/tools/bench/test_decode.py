"""`pantau bench decode`: the decoding thread's stages measured alone (numbers not asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pantau.settings import DEFAULT_CITY_FILE
from pantau.tools.bench.cli import app
from pantau.tools.bench.decode import PACK_SIZE, measure


def test_every_payload_is_decoded_and_encoded() -> None:
    senml = measure(DEFAULT_CITY_FILE, shape="senml", messages=30, repeats=2)
    assert senml.readings == 30 * PACK_SIZE
    single = measure(DEFAULT_CITY_FILE, shape="single", messages=70, repeats=1)
    assert single.readings == 70
    assert senml.readings_per_s > 0 and single.us_per_reading > 0


def test_command_prints_one_json_object() -> None:
    result = CliRunner().invoke(
        app, ["decode", "--json", "--messages", "50", "--packs", "5", "--repeats", "1"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert [(r["shape"], r["readings"]) for r in printed["rows"]] == [
        ("single", 50),
        ("senml", 5 * PACK_SIZE),
    ]
    assert printed["machine"]["cores"]
