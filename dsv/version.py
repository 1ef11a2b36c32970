"""dsv's version, in a module of its own: importing it brings in nothing else."""

__all__ = ["__version__"]

__version__ = "0.1.0"
