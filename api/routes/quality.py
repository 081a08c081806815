"""Suspect readings (operator key): what the alert service's quality control found.

A flood gauge's water level outside the sensor's range, moving faster than the river can, or
part of a spike that came back, is recorded in `reading_flags` (docs/alerts.md). The reading
itself stays in the open data as it came; these routes say which ones moved no level, and why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ConnDep
from api.errors import Problem
from api.history.query import parse_time
from api.routes.alerts import dict_rows
from api.security import AUTH_RESPONSES, OperatorDep
from pantau.city import SENSOR_ID_PATTERN

router = APIRouter(prefix="/operator", tags=["operator"], responses=AUTH_RESPONSES)

Reason = Literal["range", "gradient", "spike"]
REASONS = (
    "`range`: outside the gauge's measuring range (city file `quality`); `gradient`: further "
    "from the last accepted reading than the river can move in that time; `spike`: part of a "
    "jump that came back within a few readings."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuspectReading(_Model):
    sensor_id: str
    metric: str
    time: datetime = Field(description="Observation time of the reading.")
    value: float = Field(description="The value as the gauge sent it (kept in the open data).")
    reason: Reason = Field(description=REASONS)
    reference_time: datetime | None = Field(
        description="The last accepted reading it was checked against (none for `range`)."
    )
    reference_value: float | None
    flagged_at: datetime = Field(description="When the alert service recorded it.")


class SuspectCount(_Model):
    reason: Reason
    readings: int


class SuspectPage(_Model):
    counts: list[SuspectCount] = Field(description="Readings by reason, over the same filter.")
    items: list[SuspectReading] = Field(description="Newest observation first.")
    next: str | None = Field(description="URL of the next page, or null on the last page.")


_FILTER = """
WHERE (%(sensor)s::text IS NULL OR sensor_id = %(sensor)s)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND time >= %(since)s
"""


@router.get(
    "/suspect-readings",
    summary="Readings quality control marked suspect, with counts by reason",
    response_model=SuspectPage,
)
def list_suspect_readings(
    request: Request,
    conn: ConnDep,
    operator: OperatorDep,
    sensor: Annotated[
        str | None,
        Query(pattern=SENSOR_ID_PATTERN, max_length=63, description="Only this gauge's."),
    ] = None,
    reason: Annotated[Reason | None, Query(description="Only this reason.")] = None,
    since: Annotated[
        str | None,
        Query(
            description="Only readings observed at or after this time (RFC 3339; without an "
            "offset it is WIB); default: the last 24 hours.",
            max_length=40,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Readings per page.")] = 100,
    before: Annotated[
        str | None,
        Query(
            description="Page cursor (from `next`): readings after this one in the order.",
            max_length=200,
        ),
    ] = None,
) -> SuspectPage:
    """Suspect readings newest first; `counts` sums them up by reason."""
    at, after_sensor, after_metric = _cursor(before) if before else (None, None, None)
    params = {
        "sensor": sensor,
        "reason": reason,
        "since": parse_time(since, "since") if since else datetime.now(UTC) - timedelta(days=1),
        "before": at,
        "before_sensor": after_sensor,
        "before_metric": after_metric,
        "limit": limit + 1,
    }
    counts = dict_rows(
        conn,
        f"SELECT reason, count(*) AS readings FROM reading_flags {_FILTER} "
        "GROUP BY reason ORDER BY reason",
        params,
    )
    rows = dict_rows(
        conn,
        "SELECT sensor_id, metric, time, value, reason, reference_time, reference_value, "
        f"flagged_at FROM reading_flags {_FILTER} "
        "AND (%(before)s::timestamptz IS NULL OR (time, sensor_id, metric) "
        "< (%(before)s, %(before_sensor)s::text, %(before_metric)s::text)) "
        "ORDER BY time DESC, sensor_id DESC, metric DESC LIMIT %(limit)s",
        params,
    )
    items = [SuspectReading(**r) for r in rows[:limit]]
    more = len(rows) > limit
    next_url = None
    if more:
        last = items[-1]
        cursor = f"{last.time.isoformat()} {last.sensor_id} {last.metric}"
        next_url = str(request.url.include_query_params(before=cursor))
    return SuspectPage(counts=[SuspectCount(**c) for c in counts], items=items, next=next_url)


def _cursor(text: str) -> tuple[datetime, str, str]:
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts):
        raise Problem(400, "before is not a page cursor from `next`", kind="bad-cursor")
    return parse_time(parts[0], "before"), parts[1], parts[2]
