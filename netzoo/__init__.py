"""netzoo: generate a zoo of ~1000 neural networks, train every one, and answer questions about the population."""

__version__ = "0.1.0"
