"""Keras fixes its backend when first imported: these tests use torch unless KERAS_BACKEND says otherwise.

The tests of other backends run in subprocesses (test_keras_backends.py).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
