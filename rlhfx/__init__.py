"""rlhfx: align language models with human preferences through one command."""

__version__ = "0.1.0"
