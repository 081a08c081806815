"""`python -m alerts`: the alert service (same as `pantau alerts`)."""

from alerts.cli import main

main()
