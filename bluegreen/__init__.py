"""bluegreen: blue/green upgrade of an Obyte full node database to schema version 31."""

__version__ = "0.1.0"
