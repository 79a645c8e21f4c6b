"""Server reflection as generic tools use it, v1 (grpcurl, buf curl) and v1alpha, live."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb

from lb_service.balancer import LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME, described_files
from lb_service.service.server import SERVICE_NAME, LoadBalancerServer
from lb_service.store.memory import MemoryStore

V1_METHOD = f"/{V1_SERVICE_NAME}/ServerReflectionInfo"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A live server on an ephemeral port."""
    server = LoadBalancerServer(LoadBalancer(MemoryStore()), ServerOptions(listen="127.0.0.1:0"))
    await server.start()
    yield server.port
    await server.stop(0)


def _v1_class(name: str) -> Any:
    """A v1 message class built from the v1 descriptor the server published, not v1alpha's."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(f"grpc.reflection.v1.{name}")
    return message_factory.GetMessageClass(descriptor)


async def _ask_v1(port: int, **request: Any) -> Any:
    """One request over grpc.reflection.v1, as a v1 client sends it."""
    request_class = _v1_class("ServerReflectionRequest")
    response_class = _v1_class("ServerReflectionResponse")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        stream = call(iter([request_class(**request)]))
        async for reply in stream:
            return reply
    raise AssertionError("no reply")


async def test_v1_lists_every_service(port: int) -> None:
    """A v1 reflection client lists lb.v1, health, and both reflection services."""
    reply = await _ask_v1(port, list_services="")
    names = {service.name for service in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health", V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME} <= names


async def test_v1_describes_lb_v1_and_itself(port: int) -> None:
    """Over v1, the file defining lb.v1.LoadBalancer, and the v1 service's own, come back."""
    reply = await _ask_v1(port, file_containing_symbol=SERVICE_NAME)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert "lb/v1/load_balancer.proto" in {f.name for f in files}
    reply = await _ask_v1(port, file_containing_symbol=V1_SERVICE_NAME)
    (own,) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert own.package == "grpc.reflection.v1"
    assert own.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


async def test_v1alpha_still_answers(port: int) -> None:
    """Older tools that only speak v1alpha still get the list."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert SERVICE_NAME in names


async def test_buf_curl_lists_methods_over_v1_reflection(port: int) -> None:
    """The generic client `buf curl` lists lb.v1's methods using grpc-v1 reflection only."""
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    assert buf is not None, "buf is a dev dependency (buf-bin)"
    process = await asyncio.create_subprocess_exec(
        buf,
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        "grpc-v1",
        "--list-methods",
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert f"{SERVICE_NAME}/SelectAgent" in out.decode().split()


async def test_reflection_sends_lb_v1_with_its_comments(port: int) -> None:
    """The file reflection sends for lb.v1 keeps the proto's comments, for grpcurl describe."""
    reply = await _ask_v1(port, file_containing_symbol=SERVICE_NAME)
    (proto,) = [
        f
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            reply.file_descriptor_response.file_descriptor_proto,
        )
        if f.name == "lb/v1/load_balancer.proto"
    ]
    comments = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}
    service = 6, 0  # FileDescriptorProto.service[0]
    assert (
        comments[service].strip() == "LoadBalancer picks agents for requests and tracks their load."
    )
    register = (*service, 2, 0)  # its method[0], RegisterAgent
    assert "upsert" in comments[register]


def test_the_described_file_is_the_compiled_one_plus_comments() -> None:
    """The descriptor set with source info describes exactly what the _pb2 module compiled."""
    described = descriptor_pb2.FileDescriptorProto.FromString(
        described_files()["lb/v1/load_balancer.proto"]
    )
    described.ClearField("source_code_info")
    messages = list(described.message_type)
    while messages:  # protoc's python_out drops json_name; nothing else differs
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    assert described == descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
