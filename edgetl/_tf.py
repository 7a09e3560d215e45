"""The one place TensorFlow is imported: Keras 2 (tf-keras) is selected before the first import.

tensorflow-model-optimization only works with Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is imported anywhere in the process. Every edgetl module gets TensorFlow and
Keras through :func:`tensorflow` and :func:`keras`, never by importing them at module level, so
``import edgetl`` stays fast and TensorFlow-free.
"""

from __future__ import annotations

import os


def _configure() -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ INFO/WARNING logs off the terminal


def tensorflow():
    """Return the ``tensorflow`` module, configured for Keras 2."""
    _configure()
    import tensorflow as tf

    return tf


def keras():
    """Return Keras 2 (``tf_keras``), the Keras that tensorflow-model-optimization supports."""
    tensorflow()
    import tf_keras

    return tf_keras
