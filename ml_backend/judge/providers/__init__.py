"""Judge providers behind one interface (see base.Provider)."""
from .base import Decoding, Provider, ProviderError, scrub
from .local import LocalProvider
from .openai_compat import OpenAIProvider

__all__ = ["Decoding", "Provider", "ProviderError", "scrub", "LocalProvider", "OpenAIProvider"]
