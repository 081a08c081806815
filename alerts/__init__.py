"""The alert service: turns live readings into early warnings (Normal, Waspada, Siaga, Awas),
city alerts and sensor-health alerts, stored in the database and delivered over MQTT.

Stages: :mod:`alerts.source` (its own persistent MQTT session on the uplinks),
:mod:`alerts.evaluator` (the rules of :mod:`alerts.rules` on observation time),
:mod:`alerts.store` (state rebuilt from and committed to PostgreSQL) and
:mod:`alerts.publisher` (status, event and warning-post topics). See docs/alerts.md.
"""
