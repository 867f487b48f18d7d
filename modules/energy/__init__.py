"""The energy tree: PyEnergyNode (a fuse and an entry point for external limits) and
PyEnergyManager (shares the power out to the EVSEs). See docs/energy.md."""
