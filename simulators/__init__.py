"""City simulators: a believable sensor fleet, scenarios, faults, load and verification."""
