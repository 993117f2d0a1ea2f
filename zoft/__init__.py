"""zoft: zeroth-order and first-order fine-tuning experiments for language models."""

__version__ = "0.1.0"
