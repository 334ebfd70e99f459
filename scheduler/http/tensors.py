"""Tensors of the Open Inference Protocol (KServe v2) as they travel over HTTP: the request and
response bodies, in JSON (`data` as a flat or nested list) or with the binary tensor data extension
(`Inference-Header-Content-Length` bytes of JSON, then each tensor's bytes in order, as
`tritonclient` sends them by default: numbers little-endian, BYTES elements each prefixed by its
4-byte little-endian length). Pure: no I/O, no scheduler (`scheduler.http.routers.v2` uses it)."""

from __future__ import annotations

import struct
from math import prod
from typing import Any

import msgspec
import numpy as np

from scheduler.http.answers import HttpError, decode

NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "u1",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
HEADER_LENGTH = "inference-header-content-length"


class TensorIn(msgspec.Struct, kw_only=True):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] = {}


class OutputWanted(msgspec.Struct, kw_only=True):
    name: str
    parameters: dict[str, Any] = {}


class InferRequestV2(msgspec.Struct, kw_only=True):
    """`POST /v2/models/{m}/infer`'s JSON."""

    inputs: list[TensorIn]
    outputs: list[OutputWanted] | None = None
    id: str | None = None
    parameters: dict[str, Any] = {}


_decoder = msgspec.json.Decoder(InferRequestV2)
_encode = msgspec.json.Encoder().encode


def bad(detail: str, field: str | None = None) -> HttpError:
    return HttpError(422, "invalid_tensor", detail, field)


def split_body(body: bytes, header_length: str | None) -> tuple[InferRequestV2, bytes]:
    """The request's JSON, decoded, and the binary data after it."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad(f"Inference-Header-Content-Length {header_length!r} does not fit the body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    return decode(json_part, _decoder), binary


def read_tensors(request: InferRequestV2, binary: bytes) -> list[np.ndarray | list[str]]:
    """Each input as a numpy array of its shape (numbers) or a flat list of strings (BYTES)."""
    tensors: list[np.ndarray | list[str]] = []
    offset = 0
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        if any(not isinstance(size, int) or size < 0 for size in tensor.shape):
            raise bad(f"{where}.shape must hold sizes of 0 or more", where)
        count = prod(tensor.shape)
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise bad(f"{where}: binary_data_size {size!r} does not fit the body", where)
            chunk, offset = binary[offset : offset + size], offset + size
            tensors.append(_from_bytes(tensor, chunk, count, where))
        else:
            tensors.append(_from_json(tensor, count, where))
    return tensors


def _from_bytes(tensor: TensorIn, chunk: bytes, count: int, where: str) -> np.ndarray | list[str]:
    if tensor.datatype == "BYTES":
        strings: list[str] = []
        position = 0
        while position < len(chunk):
            if position + 4 > len(chunk):
                raise bad(f"{where}: a BYTES element's length is cut off", where)
            (length,) = struct.unpack_from("<I", chunk, position)
            position += 4
            if position + length > len(chunk):
                raise bad(f"{where}: a BYTES element is cut off", where)
            strings.append(_text(chunk[position : position + length], where))
            position += length
        if len(strings) != count:
            raise bad(f"{where} holds {len(strings)} elements; its shape says {count}", where)
        return strings
    dtype = _dtype(tensor.datatype, where)
    if len(chunk) != count * dtype.itemsize:
        raise bad(
            f"{where} holds {len(chunk)} bytes; its shape and datatype say {count * dtype.itemsize}", where
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(tensor.shape)


def _from_json(tensor: TensorIn, count: int, where: str) -> np.ndarray | list[str]:
    if tensor.data is None:
        raise bad(f"{where} has no data (and no binary_data_size)", where)
    if tensor.datatype == "BYTES":
        flat = list(_flatten(tensor.data))
        if len(flat) != count or not all(isinstance(item, str) for item in flat):
            raise bad(f"{where} must hold {count} strings", where)
        return flat
    dtype = _dtype(tensor.datatype, where)
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise bad(f"{where}.data must hold numbers of {tensor.datatype}", where) from None
    if array.size != count:
        raise bad(f"{where} holds {array.size} numbers; its shape says {count}", where)
    return array.reshape(tensor.shape)


def _flatten(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise bad(f"{where}: a BYTES element is not UTF-8 text", where) from None


def _dtype(datatype: str, where: str) -> np.dtype[Any]:
    name = NUMPY_TYPES.get(datatype)
    if name is None:
        raise bad(f"{where}: datatype {datatype!r} is not supported here", where)
    return np.dtype(name)


def wants_binary(request: InferRequestV2, name: str) -> bool:
    """Whether output `name` goes as binary data (asked for it, or for every output)."""
    for wanted in request.outputs or ():
        if wanted.name == name and "binary_data" in wanted.parameters:
            return bool(wanted.parameters["binary_data"])
    return bool(request.parameters.get("binary_data_output", False))


def response_body(
    model: str, request: InferRequestV2, name: str, array: np.ndarray, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """One FP32 output as the response body, and its headers (the JSON's length when binary)."""
    output: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = array.astype("<f4").ravel().tolist()
    answer: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": [output]}
    if request.id is not None:
        answer["id"] = request.id
    head = _encode(answer)
    if not binary:
        return head, {}
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}
