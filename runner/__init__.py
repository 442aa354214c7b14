"""How it trains: the entrypoint that runs inside the container (`python -m runner`)."""

from jobs import __version__

__all__ = ["__version__"]
