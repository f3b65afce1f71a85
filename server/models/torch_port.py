"""Our ONNX graphs as torch.nn.Modules, for the GPU path: batched, fp16 where it is safe, CUDA graphs.

A small interpreter over the graph's (topologically sorted) nodes, for exactly the ops our models use: SSCD
(int8 QDQ), the distilled SSCD, and the age and gender heads. onnx2torch does not fit: it imports torchvision at
import time (no CPU build of it here, so CI could never test it) and converts no QuantizeLinear/DequantizeLinear.

Everything computable from initializers alone (Constant, Cast of fp16 weights, DequantizeLinear of int8 weights
and int32 biases, constant shapes) is folded when the module is built; float constants become buffers, so
`.to(device)` and `.half()` move them. forward() never reads a tensor's values on the host and its shapes are
Python ints from `tensor.shape`, so it can be captured in a CUDA graph.

Activation QuantizeLinear→DequantizeLinear pairs (SSCD quantizes every activation) run as either
- "emulate" (the default): fake quantisation (round and saturate to the int8 grid), as ONNX Runtime's int8
  kernels do, with each Conv between such pairs computed on the integers themselves (see _integer_conv). On the
  dev corpus the SSCD embeddings then stay within cosine 0.9993 of ONNX Runtime's, or
- "float": saturation only, without the rounding (faster, allows fp16). The saturation must stay: the QDQ graph
  has no Relu nodes, its uint8 activations with zero point 0 are the ReLUs. Without the rounding, one dev-corpus
  crop in sixteen falls to cosine 0.79: this int8 model's outputs depend on its rounding.
An int8 graph therefore runs in fp32 (on CUDA: TF32 tensor cores, exact on its integers); float graphs (the age
and gender heads, the distilled SSCD) run fp16 on CUDA, with Pow, the reductions and Softmax in fp32 (GeM's
x**3 overflows fp16).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from server.models.batches import in_batches
from server.torch_device import resolve_device

log = logging.getLogger("jiwoom.torch_port")

QDQ_MODES = ("emulate", "float")
# Ops whose outputs are new tensors, never views of their inputs: a fake quantisation may overwrite them in place.
_FRESH_OUTPUTS = frozenset({"Conv", "Add", "Sub", "Mul", "Div", "Relu", "MaxPool", "AveragePool", "Gemm"})
_INT_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


class UnsupportedGraph(ValueError):
    """The ONNX graph uses an op or an attribute this port does not implement."""


Value = Any  # a torch.Tensor, or a tuple of Python ints (Shape's output), or None (an omitted optional input)
Step = Callable[..., Value]  # step(dtype, *inputs): dtype is what a Cast to FLOAT gives (the module's dtype)
Built = Step | tuple[Step, list[str]]  # a builder may read other (constant) inputs than the node's own


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _torch_dtype(onnx_type: int, float_dtype: torch.dtype) -> torch.dtype:
    if onnx_type == onnx.TensorProto.FLOAT:
        return float_dtype  # the module's compute dtype: fp16 after .half()
    return {onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.DOUBLE: torch.float64,
            onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
            onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8,
            onnx.TensorProto.BOOL: torch.bool}[onnx_type]


def _axis_shape(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """Per-axis quantisation parameters shaped to broadcast along `axis` of an ndim-tensor."""
    if values.numel() == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return values.reshape(shape)


def _quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, axis: int) -> torch.Tensor:
    low, high = _INT_RANGES[zero.dtype]
    s, z = _axis_shape(scale, axis, x.ndim), _axis_shape(zero, axis, x.ndim)
    return (torch.round(x / s.to(x.dtype)) + z.to(x.dtype)).clamp(low, high).to(zero.dtype)  # half to even


def _dequantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, axis: int,
                dtype: torch.dtype) -> torch.Tensor:
    s = _axis_shape(scale, axis, x.ndim).float()
    z = 0.0 if zero is None else _axis_shape(zero, axis, x.ndim).float()
    return ((x.float() - z) * s).to(dtype)


def _pool_padding(pads: Sequence[int], spatial: int) -> tuple[list[int], list[int] | None]:
    """ONNX pads [b1, b2, e1, e2] as torch's symmetric padding, or an explicit F.pad list when asymmetric."""
    begins, ends = list(pads[:spatial]), list(pads[spatial:])
    if begins == ends:
        return begins, None
    explicit: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        explicit += [begin, end]
    return [0] * spatial, explicit


class OnnxModule(torch.nn.Module):
    """The function of an ONNX graph with one input and one output, in PyTorch.

    `qdq`: "emulate" or "float", for activation QuantizeLinear→DequantizeLinear pairs (module docstring)."""

    def __init__(self, model: onnx.ModelProto | str | Path, qdq: str = "emulate") -> None:
        super().__init__()
        if qdq not in QDQ_MODES:
            raise ValueError(f"qdq must be one of {QDQ_MODES}, not {qdq!r}")
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        graph = model.graph
        self.qdq = qdq
        constants: dict[str, torch.Tensor] = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
                                              for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UnsupportedGraph(f"graphs with one input and one output only, not {inputs} -> "
                                   f"{[o.name for o in graph.output]}")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        unsupported: dict[str, list[str]] = {}
        for n in graph.node:
            if n.op_type not in _OPS:
                unsupported.setdefault(n.op_type, []).append(n.name or n.output[0])
        if unsupported:
            listed = "; ".join(f"{op} ({len(names)} nodes, e.g. {names[0]!r})" for op, names in unsupported.items())
            raise UnsupportedGraph(f"ONNX ops this port does not implement: {listed}")

        consumers: dict[str, list[onnx.NodeProto]] = {}
        producers: dict[str, str] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
            producers.update((name, node.op_type) for name in node.output)
        self._steps: list[tuple[Step, tuple[str, ...], tuple[str, ...]]] = []
        self._constant_keys: dict[str, str] = {}  # ONNX name -> buffer name
        self.integer_convs = 0
        fused: set[int] = set()  # DequantizeLinear nodes already run as part of their QuantizeLinear
        # For convolutions on integers: emulated pairs' outputs (scale * integers) -> scale, and dequantized
        # constant weights -> (their integers, scale, axis).
        grids: dict[str, float] = {}
        integer_weights: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
        known = set(constants) | {self.input_name, ""}
        for node in graph.node:
            if id(node) in fused:
                continue
            missing = [name for name in node.input if name not in known]
            if missing:
                raise UnsupportedGraph(f"node {node.name or node.output[0]!r} reads {missing} before they are made: "
                                       "the graph is not topologically sorted")
            known.update(node.output)
            pair = self._qdq_pair(node, consumers, constants)
            if pair is not None:
                fused.add(id(pair))
                known.update(pair.output)
                inplace = len(consumers[node.input[0]]) == 1 and producers.get(node.input[0]) in _FRESH_OUTPUTS
                self._add_step(_fake_quant(node, constants, qdq, inplace), [node.input[0]], pair.output, constants)
                if qdq == "emulate":
                    grids[pair.output[0]] = float(constants[node.input[1]].reshape(()))
                continue
            if node.op_type == "Conv" and node.input[0] in grids and node.input[1] in integer_weights:
                built = _integer_conv(node, _attributes(node), constants, grids[node.input[0]],
                                      integer_weights[node.input[1]])
                self.integer_convs += 1
            else:
                built = _OPS[node.op_type](node, _attributes(node), constants)
            step, inputs = built if isinstance(built, tuple) else (built, list(node.input))
            if node.op_type != "Shape" and all(name == "" or name in constants for name in inputs):
                with torch.no_grad():  # constant folding: weights dequantized or cast once, here
                    result = step(torch.float32, *(constants.get(name) for name in inputs))
                for name, value in zip(node.output, result if isinstance(result, tuple) else (result,), strict=True):
                    constants[name] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                if node.op_type == "DequantizeLinear" and len(inputs) == 3 and inputs[2]:
                    quantized, scale, zero = (constants[name] for name in inputs)
                    axis = _attributes(node).get("axis", 1)
                    integers = quantized.float() - _axis_shape(zero, axis, quantized.ndim).float()
                    integer_weights[node.output[0]] = (integers, scale.float(), axis)
                continue
            self._add_step(step, inputs, node.output, constants)

    @staticmethod
    def _qdq_pair(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]],
                  constants: dict[str, torch.Tensor]) -> onnx.NodeProto | None:
        """The DequantizeLinear that undoes this activation QuantizeLinear with the same parameters, if any."""
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            return None
        readers = consumers.get(node.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "DequantizeLinear":
            return None
        pair = readers[0]
        # Per-tensor only: a per-channel pair runs as its two steps (exact, with its parameters as buffers).
        per_tensor = len(node.input) == 3 and all(name in constants and constants[name].numel() == 1
                                                  for name in node.input[1:])
        return pair if per_tensor and list(pair.input[1:]) == list(node.input[1:]) else None

    def _add_step(self, step: Step, inputs: Sequence[str], outputs: Sequence[str],
                  constants: dict[str, torch.Tensor]) -> None:
        for name in inputs:
            if name in constants and name not in self._constant_keys:
                key = f"c{len(self._constant_keys)}"
                self._constant_keys[name] = key
                self.register_buffer(key, constants[name].contiguous())
        self._steps.append((step, tuple(inputs), tuple(outputs)))

    def half(self) -> OnnxModule:
        if self.integer_convs:
            raise UnsupportedGraph(f"this int8 graph runs in fp32 only: its {self.integer_convs} convolutions sum "
                                   "integers that fp16 cannot hold (on CUDA they still use the tensor cores, as TF32)")
        return super().half()

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the float buffers (float32, or float16 after .half())."""
        return next((b.dtype for b in self.buffers() if b.is_floating_point()), torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype
        values: dict[str, Value] = {"": None, self.input_name: x}
        values.update((name, self._buffers[key]) for name, key in self._constant_keys.items())
        for step, inputs, outputs in self._steps:
            result = step(dtype, *(values[name] for name in inputs))
            if len(outputs) == 1:
                values[outputs[0]] = result
            else:
                values.update(zip(outputs, result, strict=True))
        return values[self.output_name].float()


# --------------------------------------------------------------------------------------------- ops
# Each builder reads a node's attributes (and constant inputs it needs as Python values) once, and returns
# step(dtype, *inputs).


def _static(constants: dict[str, torch.Tensor], name: str, what: str) -> list[int]:
    if name not in constants:
        raise UnsupportedGraph(f"{what} must be a constant (an initializer or folded), not computed ({name!r})")
    return [int(v) for v in constants[name].reshape(-1).tolist()]


def _scalar(constants: dict[str, torch.Tensor], name: str, what: str) -> float | None:
    if name == "":
        return None
    if name not in constants or constants[name].numel() != 1:
        raise UnsupportedGraph(f"{what} must be a constant scalar ({name!r})")
    return float(constants[name].reshape(-1)[0])


def _elementwise(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., Step]:
    def build(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
        return lambda dtype, a, b: fn(a, b)
    return build


def _cast(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    target = attrs["to"]
    return lambda dtype, x: x.to(_torch_dtype(target, dtype))


def _transpose(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    perm = attrs.get("perm")
    return lambda dtype, x: x.permute(*(perm if perm is not None else reversed(range(x.ndim))))


def _quantize_linear(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    axis = attrs.get("axis", 1)
    if len(node.input) < 3 or not node.input[2]:
        raise UnsupportedGraph(f"QuantizeLinear {node.name!r} without a zero point (its type) is not supported")
    return lambda dtype, x, scale, zero: _quantize(x, scale, zero, axis)


def _dequantize_linear(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    axis = attrs.get("axis", 1)
    return lambda dtype, x, scale, zero=None: _dequantize(x, scale, zero, axis, dtype)


def _fake_quant(quant: onnx.NodeProto, constants: dict[str, torch.Tensor], mode: str, inplace: bool) -> Step:
    """One step for a per-tensor activation QuantizeLinear→DequantizeLinear pair: fake quantisation (what ONNX
    Runtime's int8 kernels compute), or only its saturation. `inplace`: nothing else reads the input."""
    zero = constants[quant.input[2]]
    low, high = _INT_RANGES[zero.dtype]
    s, z = float(constants[quant.input[1]].reshape(())), int(zero.reshape(()))
    if mode == "float":
        return (lambda dtype, x: x.clamp_((low - z) * s, (high - z) * s)) if inplace else \
            (lambda dtype, x: x.clamp((low - z) * s, (high - z) * s))

    def step(dtype: torch.dtype, x: torch.Tensor) -> Value:
        if x.is_cuda or not inplace:  # one fused kernel on the GPU
            return torch.fake_quantize_per_tensor_affine(x, s, z, low, high)
        # On the CPU the same in place is 3x faster: no new activation-sized buffer (x / s rounds as x * (1/s)
        # does there only at exact ties).
        return x.div_(s).round_().add_(z).clamp_(low, high).sub_(z).mul_(s)
    return step


def _conv_arguments(node: onnx.NodeProto, attrs: dict[str, Any]) -> tuple[Any, ...]:
    """(strides, padding, dilations, groups, explicit F.pad list or None) of a 2-D Conv."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedGraph(f"Conv {node.name!r}: auto_pad is not supported")
    if len(attrs.get("kernel_shape", [0, 0])) != 2:
        raise UnsupportedGraph(f"Conv {node.name!r}: only 2-D convolutions are supported")
    padding, explicit = _pool_padding(attrs.get("pads", [0, 0, 0, 0]), 2)
    return attrs.get("strides", [1, 1]), padding, attrs.get("dilations", [1, 1]), attrs.get("group", 1), explicit


def _conv(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    strides, padding, dilations, groups, explicit = _conv_arguments(node, attrs)

    def step(dtype: torch.dtype, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Value:
        x = x.to(weight.dtype)
        if explicit is not None:
            x = F.pad(x, explicit)
        return F.conv2d(x, weight, bias, strides, padding, dilations, groups)
    return step


def _integer_conv(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor], input_scale: float,
                  weight: tuple[torch.Tensor, torch.Tensor, int]) -> Built:
    """A Conv of int8-quantised activations and weights, computed as ONNX Runtime's int8 kernels do: on the
    integers themselves (exact products, fp32 sums), scaled once after. Integers up to 255 are exact in TF32
    and fp16 operands, so on CUDA the tensor cores give the same sums; scaled floats would not be exact there,
    and every rounding they shift moves an activation a whole quantisation step (cosine to ONNX Runtime 0.98
    instead of 0.999 on the dev corpus, with only TF32's rounding of the operands)."""
    integers, weight_scale, axis = weight
    if weight_scale.numel() != 1 and axis not in (0, -4):
        raise UnsupportedGraph(f"Conv {node.name!r}: weights quantised along axis {axis}, not per output channel")
    strides, padding, dilations, groups, explicit = _conv_arguments(node, attrs)
    scale = (input_scale * weight_scale.reshape(-1)).reshape(1, -1, 1, 1)
    inputs = [node.input[0], f"{node.output[0]}#integers", f"{node.output[0]}#scale"]
    constants[inputs[1]], constants[inputs[2]] = integers, scale
    if len(node.input) > 2 and node.input[2]:  # the int32 bias, in units of the product's scale
        inputs.append(f"{node.output[0]}#bias")
        constants[inputs[3]] = constants[node.input[2]].float() / scale.reshape(-1)

    def step(dtype: torch.dtype, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
             bias: torch.Tensor | None = None) -> Value:
        x = x.float().div(input_scale).round_()  # back to the integers the pair rounded to
        if explicit is not None:
            x = F.pad(x, explicit)
        bias = None if bias is None else bias.float()
        return F.conv2d(x, weight.float(), bias, strides, padding, dilations, groups).mul_(scale.float())
    return step, inputs


def _pool(kind: str) -> Callable[..., Step]:
    def build(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
        kernel = attrs["kernel_shape"]
        if len(kernel) != 2 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedGraph(f"{node.op_type} {node.name!r}: 2-D pooling without auto_pad only")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("storage_order", 0):
            raise UnsupportedGraph(f"{node.op_type} {node.name!r}: dilations and storage_order are not supported")
        strides, ceil = attrs.get("strides", [1, 1]), bool(attrs.get("ceil_mode", 0))
        padding, explicit = _pool_padding(attrs.get("pads", [0, 0, 0, 0]), 2)
        if kind == "max":
            def step(dtype: torch.dtype, x: torch.Tensor) -> Value:
                if explicit is not None:
                    x = F.pad(x, explicit, value=-math.inf)
                return F.max_pool2d(x, kernel, strides, padding, ceil_mode=ceil)
            return step
        if explicit is not None:
            raise UnsupportedGraph(f"AveragePool {node.name!r}: asymmetric pads are not supported")
        include = bool(attrs.get("count_include_pad", 0))
        return lambda dtype, x: F.avg_pool2d(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include)
    return build


def _global_average_pool(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    return lambda dtype, x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


def _relu(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    return lambda dtype, x: F.relu(x)


def _reshape(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    shape = _static(constants, node.input[1], f"Reshape {node.name!r} shape")
    allow_zero = bool(attrs.get("allowzero", 0))

    def step(dtype: torch.dtype, x: torch.Tensor, _: Any = None) -> Value:
        target = [x.shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(shape)]
        return x.reshape(target)
    return step


def _flatten(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    axis = attrs.get("axis", 1)

    def step(dtype: torch.dtype, x: torch.Tensor) -> Value:
        split = axis if axis >= 0 else axis + x.ndim
        return x.reshape(math.prod(x.shape[:split]), math.prod(x.shape[split:]))
    return step


def _clip(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    low = _scalar(constants, node.input[1], f"Clip {node.name!r} min") if len(node.input) > 1 else None
    high = _scalar(constants, node.input[2], f"Clip {node.name!r} max") if len(node.input) > 2 else None
    return lambda dtype, x, *_: x.clamp(low, high)


def _pow(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    exponent = _scalar(constants, node.input[1], f"Pow {node.name!r} exponent")
    return lambda dtype, x, _: x.float().pow(exponent)


def _reduce_axes(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:  # opset 18 passes axes as an input
        return _static(constants, node.input[1], f"{node.op_type} {node.name!r} axes")
    return attrs.get("axes")


def _reduce(kind: str) -> Callable[..., Step]:
    def build(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
        axes, keep = _reduce_axes(node, attrs, constants), bool(attrs.get("keepdims", 1))
        if axes is None and attrs.get("noop_with_empty_axes", 0):
            raise UnsupportedGraph(f"{node.op_type} {node.name!r}: noop_with_empty_axes is not supported")

        def step(dtype: torch.dtype, x: torch.Tensor, *_: Any) -> Value:
            dims = tuple(axes) if axes is not None else tuple(range(x.ndim))
            if kind == "mean":
                return x.float().mean(dim=dims, keepdim=keep)
            return torch.linalg.vector_norm(x.float(), dim=dims, keepdim=keep)
        return step
    return build


def _gemm(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Built:
    if node.input[1] not in constants:
        raise UnsupportedGraph(f"Gemm {node.name!r}: B must be a constant (a weight)")
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a = bool(attrs.get("transA", 0))
    weight = constants[node.input[1]].float()
    # Under names of its own (B may feed other nodes), as F.linear wants it ([out, in]), alpha and beta folded.
    inputs = [node.input[0], f"{node.output[0]}#weight"]
    constants[inputs[1]] = (weight if attrs.get("transB", 0) else weight.t()).contiguous() * alpha
    if len(node.input) > 2 and node.input[2]:
        inputs.append(f"{node.output[0]}#bias")
        constants[inputs[2]] = constants[node.input[2]].float() * beta

    def step(dtype: torch.dtype, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Value:
        a = a.to(weight.dtype)
        return F.linear(a.t() if trans_a else a, weight, bias)
    return step, inputs


def _shape(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    start, end = attrs.get("start", 0), attrs.get("end")
    return lambda dtype, x: tuple(x.shape[start:end])  # Python ints: no device round trip, graph-capturable


def _expand(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    fixed = _static(constants, node.input[1], "Expand shape") if node.input[1] in constants else None

    def step(dtype: torch.dtype, x: torch.Tensor, shape: Any) -> Value:
        target = fixed if fixed is not None else list(shape)
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(target)))
    return step


def _softmax(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    axis = attrs.get("axis", -1)
    return lambda dtype, x: torch.softmax(x.float(), dim=axis)


def _pad(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    mode = attrs.get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise UnsupportedGraph(f"Pad {node.name!r}: mode {mode!r} is not supported")
    pads = _static(constants, node.input[1], f"Pad {node.name!r} pads")
    value = _scalar(constants, node.input[2], "Pad value") if len(node.input) > 2 else None
    axes = _static(constants, node.input[3], "Pad axes") if len(node.input) > 3 and node.input[3] else None

    def step(dtype: torch.dtype, x: torch.Tensor, *_: Any) -> Value:
        dims = [a % x.ndim for a in axes] if axes is not None else list(range(x.ndim))
        half = len(dims)
        per_dim = {d: (pads[i], pads[i + half]) for i, d in enumerate(dims)}
        explicit: list[int] = []
        for d in reversed(range(x.ndim)):
            explicit += list(per_dim.get(d, (0, 0)))
        return F.pad(x, explicit, value=value or 0.0)
    return step


def _constant(node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]) -> Step:
    if "value" in attrs:
        value = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
    elif "value_float" in attrs:
        value = torch.tensor(attrs["value_float"], dtype=torch.float32)
    elif "value_int" in attrs:
        value = torch.tensor(attrs["value_int"], dtype=torch.int64)
    elif "value_ints" in attrs:
        value = torch.tensor(attrs["value_ints"], dtype=torch.int64)
    elif "value_floats" in attrs:
        value = torch.tensor(attrs["value_floats"], dtype=torch.float32)
    else:
        raise UnsupportedGraph(f"Constant {node.name!r}: attribute {sorted(attrs)} is not supported")
    return lambda dtype: value


_OPS: dict[str, Callable[[onnx.NodeProto, dict[str, Any], dict[str, torch.Tensor]], Built]] = {
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "Cast": _cast,
    "Transpose": _transpose,
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "GlobalAveragePool": _global_average_pool,
    "Relu": _relu,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Clip": _clip,
    "Pow": _pow,
    "ReduceMean": _reduce("mean"),
    "ReduceL2": _reduce("l2"),
    "Gemm": _gemm,
    "Shape": _shape,
    "Expand": _expand,
    "Softmax": _softmax,
    "Pad": _pad,
    "Constant": _constant,
}
SUPPORTED_OPS = frozenset(_OPS)


# --------------------------------------------------------------------------------------------- running


def padded_size(count: int, limit: int) -> int:
    """The batch a CUDA graph runs `count` rows as: the next power of two, at most `limit` (few graphs, and
    at most half of a batch's rows wasted on padding)."""
    return min(limit, 1 << max(0, count - 1).bit_length())


_CAPTURE = threading.Lock()  # one capture at a time in the process: captures must not interleave


class TorchNetwork:
    """An ONNX file run by PyTorch on numpy batches (the "torch" runtime of onnx_session.open_network).

    On CUDA: fp16 (if asked), channels-last convolutions, and with `cuda_graphs` each chunk of rows padded to a
    power-of-two batch whose graph is captured on first use and replayed after: no per-op launch cost. On the
    CPU: fp32, eager."""

    def __init__(self, source: Path | str | OnnxModule, *, device: str = "auto", fp16: bool = True,
                 cuda_graphs: bool = True, max_batch: int = 32, qdq: str = "emulate") -> None:
        """`source`: an ONNX file, or a module already converted (then `qdq` is the module's own)."""
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        module = (source if isinstance(source, OnnxModule) else OnnxModule(source, qdq)).eval()
        self.fp16 = cuda and fp16 and not module.integer_convs
        if fp16 and not self.fp16:
            log.info("%s runs fp32 on %s: fp16 is for float graphs on CUDA", source, self.device)
        if self.fp16:
            module = module.half()
        self.module = module.to(self.device)
        if cuda:
            self.module = self.module.to(memory_format=torch.channels_last)  # tensor cores want NHWC
            torch.backends.cudnn.benchmark = True  # shapes repeat (padded batches): tune each conv once
            torch.backends.cudnn.allow_tf32 = True  # the default; exact for the int8 graphs' integer operands
        self.max_batch = max(1, max_batch)
        self.cuda_graphs = cuda and cuda_graphs
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()  # a graph's input and output buffers are shared by its callers

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return in_batches(self._run, batch, self.max_batch)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(chunk))
        with torch.inference_mode():
            if not self.cuda_graphs:
                return self.module(tensor.to(self.device)).cpu().numpy()
            with self._lock:
                graph, static_in, static_out = self._graph(padded_size(len(chunk), self.max_batch),
                                                           tuple(chunk.shape[1:]), tensor.dtype)
                static_in[: len(chunk)].copy_(tensor)  # padding rows keep old data: rows are independent
                graph.replay()
                return static_out[: len(chunk)].cpu().numpy()

    def _graph(self, size: int, shape: tuple[int, ...],
               dtype: torch.dtype) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        key = (size, shape, dtype)
        if key not in self._graphs:
            static_in = torch.zeros((size, *shape), dtype=dtype, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the capture: cuDNN picks its algorithms here
                for _ in range(2):
                    self.module(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with _CAPTURE, torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = self.module(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        return self._graphs[key]
