"""The sensor catalogue: families, metrics, units, valid ranges and Smart Data Models names."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.responses import Body, cached_json
from api.schemas import Catalogue, FamilyInfo, MetricInfo, MetricState
from pantau.catalogue import CATALOGUE

router = APIRouter(tags=["sensors"])

CATALOGUE_BODY = Body.of(
    Catalogue(
        families=[
            FamilyInfo(
                family=family.value,
                metrics=[
                    MetricInfo(
                        name=m.name,
                        unit=m.unit,
                        description=m.description,
                        minimum=m.minimum,
                        maximum=m.maximum,
                        integer=m.integer,
                        sdm_entity=m.sdm_entity,
                        sdm_attribute=m.sdm_attribute,
                        label=m.label,
                        label_en=m.label_en,
                        symbol=m.symbol,
                        symbol_en=m.shown_unit_en,
                        scale=m.scale,
                        decimals=m.decimals,
                        states=[
                            MetricState(value=v, label=text, label_en=text_en)
                            for v, text, text_en in m.states
                        ],
                    )
                    for m in metrics.values()
                ],
            )
            for family, metrics in CATALOGUE.items()
        ]
    ).model_dump(mode="json")
)


@router.get(
    "/catalogue",
    response_model=Catalogue,
    summary="What each family of sensors measures: metrics, units, ranges, meaning",
)
async def catalogue(request: Request) -> Response:
    return cached_json(request, CATALOGUE_BODY, max_age_s=3600)
