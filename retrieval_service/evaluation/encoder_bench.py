"""Encoder speed for `whatart bench throughput`: through Triton, in-process onnxruntime, and
this CPU's FP32 limit for the model.

The FP32 limit is measured, not taken from a datasheet: the best FP32 dense throughput
software reaches on this machine (a large float32 matrix product through numpy's BLAS on
every core) divided by the model's FP32 work per image (2 x the multiply-accumulates of its
Conv and Gemm/MatMul layers, counted from the ONNX graph). An FP32 encoder cannot beat it;
only lower precision (INT8) can.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from whatart.retrieval_service.triton.encoder import TritonEncoder
from whatart.retrieval_service.triton.model_contract import OUTPUT_NAME

GEMM_SIDE = 2048


@dataclass(frozen=True)
class Rate:
    batch: int
    in_flight: int
    images: int
    images_per_s: float


@dataclass(frozen=True)
class Fp32Limit:
    gemm_gflop_per_s: float
    """float32 matrix product 2048 x 2048 x 2048, numpy's BLAS, all cores (best of 5)"""
    model_gflop_per_image: float
    """2 x multiply-accumulates of the FP32 graph's Conv and Gemm/MatMul layers"""
    images_per_s: float

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "how": "gemm_gflop_per_s / model_gflop_per_image: measured FP32 matrix-product "
                "throughput on all cores divided by the model's FP32 work per image (counted from its ONNX graph)"}


def model_gflop(onnx_path: Path, input_size: int) -> float:
    """GFLOP per image of the graph at `input_size` px, as FP32 work: 2 x MACs of every Conv
    and Gemm/MatMul (weights given directly, or through a DequantizeLinear or Cast as in INT8
    QDQ and FP16 graphs). The file is only read: a graph of any input size gets this one in memory."""
    import onnx

    loaded = onnx.load(str(onnx_path))
    for dim, value in zip(loaded.graph.input[0].type.tensor_type.shape.dim, (1, input_size, input_size, 3), strict=True):
        dim.dim_value = value
    model = onnx.shape_inference.infer_shapes(loaded)
    shapes = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    weights.update({node.output[0]: weights[node.input[0]] for node in model.graph.node
                    if node.op_type in ("DequantizeLinear", "Cast") and node.input[0] in weights})
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights and node.output[0] in shapes:
            # each output element (per image: channels x height x width) costs Cin/groups x kh x kw
            macs += int(np.prod(shapes[node.output[0]][1:])) * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            macs += int(np.prod(weights[node.input[1]]))
    return 2 * macs / 1e9


def gemm_gflop_per_s(repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((GEMM_SIDE, GEMM_SIDE), dtype=np.float32)
    b = a.T.copy()
    a @ b  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * GEMM_SIDE**3 / best / 1e9


def fp32_limit(onnx_path: Path, input_size: int) -> Fp32Limit:
    gemm, gflop = gemm_gflop_per_s(), model_gflop(onnx_path, input_size)
    return Fp32Limit(round(gemm, 1), round(gflop, 3), round(gemm / gflop, 1))


def onnxruntime_rate(onnx_path: Path, pixels: np.ndarray, batch: int, seconds: float) -> Rate:
    """In-process onnxruntime on every core, full graph optimisation: the best a plain
    session does here without Triton."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batches = [pixels[i : i + batch] for i in range(0, len(pixels) - batch + 1, batch)]
    graph_input = session.get_inputs()[0].name
    session.run([OUTPUT_NAME], {graph_input: batches[0]})  # warm-up
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for chunk in batches:
            session.run([OUTPUT_NAME], {graph_input: chunk})
            images += len(chunk)
    return Rate(batch, 1, images, round(images / (time.perf_counter() - started), 1))


async def served_input_size(url: str, api_key: str, model: str) -> int:
    encoder = TritonEncoder(url, model, api_key=api_key)
    try:
        return (await encoder.served_model()).input_size
    finally:
        await encoder.close()


async def triton_rate(url: str, api_key: str, model: str, pixels: np.ndarray, batch: int, in_flight: int, seconds: float) -> Rate:
    """Requests of `batch` images, `in_flight` at a time, for `seconds`: Triton's dynamic
    batcher groups them as it would the service's."""
    encoder = TritonEncoder(url, model, api_key=api_key)
    batches = [pixels[i : i + batch] for i in range(0, len(pixels) - batch + 1, batch)]
    try:
        await encoder.encode(batches[0])  # warm-up
        images = 0
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal images
            turn = offset
            while time.perf_counter() < deadline:
                chunk = batches[turn % len(batches)]
                await encoder.encode(chunk)
                images += len(chunk)
                turn += in_flight

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(in_flight)))
        return Rate(batch, in_flight, images, round(images / (time.perf_counter() - started), 1))
    finally:
        await encoder.close()


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
