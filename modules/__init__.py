"""everkit: EVerest-compatible charger modules and the pure-Python framework that runs them."""

__version__ = "0.1.0"
