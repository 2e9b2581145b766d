"""hpsh-tf2: HPSH deep hashing for remote-sensing image retrieval, in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
"""The package version: the one place it is written (``setup.cfg`` reads it from here)."""
