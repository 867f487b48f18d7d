"""SIL simulators: the charger hardware and the car around everkit's modules."""
