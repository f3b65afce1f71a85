"""Triton python backend entry for `frame_sampler`: the shared adapter over server/models/frame_sampler.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
