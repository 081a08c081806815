"""OGC SensorThings API v1.1 (read-only) over Pantau's registry and readings.

:mod:`api.sta.model` maps entity sets onto the database, :mod:`api.sta.odata` parses the query
options, :mod:`api.sta.compile` turns them into SQL compositions, :mod:`api.sta.query` runs
them; the routes are in :mod:`api.routes.sta`.
"""
