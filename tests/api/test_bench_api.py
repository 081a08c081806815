"""`pantau bench api --quick` runs end to end (the machinery, not a measurement)."""

from __future__ import annotations

from pantau.catalogue import Family
from pantau.tools.bench.api import ApiBenchConfig, run_api_bench, synthetic_city


def test_synthetic_city_spreads_families_over_the_kecamatan() -> None:
    city = synthetic_city(60)
    assert len(city.sensors) == 60
    assert {len(city.of_family(f)) for f in Family} == {20}
    assert len({s.kecamatan for s in city.sensors}) == 24


def test_quick_api_bench_measures_every_scenario(admin_url: str) -> None:
    lines: list[str] = []
    result = run_api_bench(
        ApiBenchConfig.quick(admin_url=admin_url, duration_s=0.5, log=lines.append)
    )
    assert result.readings > 0
    by_name = {row.name: row for row in result.rows}
    for name in ("latest of all sensors", "24-hour 5-minute series", "30-day hourly series",
                 "city status"):  # fmt: skip
        assert by_name[name].requests > 0, name
        assert by_name[name].errors == 0, name
        assert by_name[name].p95_ms is not None
    csv = by_name["CSV export of one family-day"]
    assert csv.mb_per_s is not None and csv.mb_per_s > 0
