"""The scoring server's version: its own module, so the server's modules read it without
importing the package `__init__` that lazily imports them."""

__version__ = "0.1.0"
