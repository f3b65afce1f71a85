"""Triton python backend entry for `age_head`: the shared adapter over server/models/age_head.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
