"""Response models of the SensorThings routes, for the OpenAPI document.

Every member is optional (``$select`` may drop any of them) and expansions add members named
after navigation properties, so the models allow extra members.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.sta.model import ENTITY_SETS, EntitySet


class GeoPoint(BaseModel):
    type: str = Field(examples=["Point"])
    coordinates: list[float] = Field(description="Longitude, latitude (RFC 7946).")


class UnitOfMeasurement(BaseModel):
    name: str
    symbol: str
    definition: str


_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "name": (str, "Name."),
    "description": (str, "Description."),
    "properties": (dict[str, Any], "Further properties."),
    "encodingType": (str, "Media type of `location`, `feature` or `metadata`."),
    "location": (GeoPoint, "Where the sensor stands (GeoJSON)."),
    "feature": (GeoPoint, "The observed feature (GeoJSON)."),
    "unitOfMeasurement": (UnitOfMeasurement, "Unit of the results."),
    "observationType": (str, "OM_Measurement: results are numbers."),
    "definition": (str, "URI of the observed property."),
    "metadata": (str, "Description of the sensor type."),
    "time": (str, "When the Thing was registered at this Location (RFC 3339, UTC)."),
    "phenomenonTime": (str, "Observation time (RFC 3339, UTC)."),
    "resultTime": (str, "Same as phenomenonTime."),
    "result": (float, "The measured value, in the Datastream's unit."),
    "parameters": (dict[str, Any], "`timeEstimated`: the device sent no time of its own."),
}


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    iot_id: str | None = Field(default=None, alias="@iot.id")
    iot_self_link: str | None = Field(default=None, alias="@iot.selfLink")


def _entity_model(es: EntitySet) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in es.fields:
        kind, text = _FIELD_TYPES[name]
        fields[name] = (kind | None, Field(default=None, description=text))
    for nav, relation in es.navigation.items():
        target = ENTITY_SETS[relation.target].singular
        fields[f"{nav}_link"] = (
            str | None,
            Field(
                default=None,
                alias=f"{nav}@iot.navigationLink",
                description=f"URL of this {es.singular}'s {nav} ({target}).",
            ),
        )
    model: type[BaseModel] = create_model(es.singular, __base__=_Entity, **fields)
    model.__doc__ = f"A SensorThings {es.singular}."
    return model


def _collection_model(es: EntitySet, entity: type[BaseModel]) -> type[BaseModel]:
    model: type[BaseModel] = create_model(
        f"{es.name}Collection",
        count=(
            int | None,
            Field(
                default=None,
                alias="@iot.count",
                description="Number of matching entities ($count=true).",
            ),
        ),
        next_link=(
            str | None,
            Field(
                default=None,
                alias="@iot.nextLink",
                description="URL of the next page, while there is one.",
            ),
        ),
        value=(list[entity], Field(description="The page.")),  # type: ignore[valid-type]
    )
    model.__doc__ = f"A page of {es.name}."
    return model


ENTITY_MODELS: dict[str, type[BaseModel]] = {
    name: _entity_model(es) for name, es in ENTITY_SETS.items()
}
COLLECTION_MODELS: dict[str, type[BaseModel]] = {
    name: _collection_model(es, ENTITY_MODELS[name]) for name, es in ENTITY_SETS.items()
}


class EntitySetLink(BaseModel):
    name: str = Field(examples=["Things"])
    url: str


class ServerSettings(BaseModel):
    conformance: list[str]


class LandingPage(BaseModel):
    """The service root: the entity sets and the conformance classes met."""

    value: list[EntitySetLink]
    serverSettings: ServerSettings  # noqa: N815 - the member name is the standard's
