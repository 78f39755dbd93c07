"""The HTTP layer: the only code that imports Flask."""
from .app import create_app

__all__ = ["create_app"]
