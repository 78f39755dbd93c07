"""``labeljudge``: argument parsing (``main``), the commands, and the quickstart."""
from .main import main

__all__ = ["main"]
