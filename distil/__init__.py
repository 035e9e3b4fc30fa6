"""distil: a DistilBERT classifier from a checkpoint to a load-tested Triton deployment."""

__version__ = "0.1.0"
