"""Triton python backend entry for `face_detect`: the shared adapter over server/models/face_detect.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
