"""The alert service: turns readings into early warnings (Normal, Waspada, Siaga, Awas).

Not built yet. The shared pieces it will use already exist: per-gauge thresholds with history
(`flood_thresholds`), `pantau.city.FloodLevel` and `Thresholds.level`, and the `alerts` table.
See docs/roadmap.md.
"""
