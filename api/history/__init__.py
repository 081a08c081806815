"""A readings history (``/readings``, ``/sensors/{id}/readings``): its parameters, its SQL and
its CSV export; the routes are in api.routes.readings."""
