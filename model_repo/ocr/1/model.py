"""Triton python backend entry for `ocr`: the shared adapter over server/models/ocr.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
