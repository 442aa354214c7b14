"""How it trains: the entrypoint that runs inside the container (`python -m runner`)."""

__version__ = "0.1.0"
