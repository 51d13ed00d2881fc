"""The ``collector`` command line."""

from collector.cli.main import cli, main

__all__ = ["cli", "main"]
