"""PyEvseManager: EVerest's EvseManager for DC charging, as a pure core and a thin adapter."""
