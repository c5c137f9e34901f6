"""The ``byzer-like`` command line."""

from byzer_like.cli.main import main

__all__ = ["main"]
