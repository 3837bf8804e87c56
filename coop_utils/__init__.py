"""Cooperative Learning for Cost-Adaptive Inference: the replication library."""

__version__ = "0.1.0"
