"""Triton python backend entry for `face_embed`: the shared adapter over server/models/face_embed.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
