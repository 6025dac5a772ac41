"""strangler: a strangler-fig migration proxy."""

__version__ = "0.1.0"
