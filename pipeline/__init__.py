"""downstream-scaling: pretraining data → downstream translation quality, and the laws that predict it."""

__version__ = "0.1.0"
