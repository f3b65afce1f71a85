"""Triton python backend entry for `audio_fingerprint`: the shared adapter over server/models/audio_fingerprint.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
