"""Triton python backend entry for `local_features`: the shared adapter over server/models/local_features.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
