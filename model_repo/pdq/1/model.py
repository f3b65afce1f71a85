"""Triton python backend entry for `pdq`: the shared adapter over server/models/pdq.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
