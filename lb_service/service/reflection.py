"""gRPC server reflection under both names clients ask for: ``v1`` and ``v1alpha``.

grpcurl and current gRPC tools ask ``grpc.reflection.v1.ServerReflection`` first;
older ones ask ``v1alpha``. The installed grpcio-reflection serves only ``v1alpha``,
whose messages are the same, field for field, as ``v1``'s (``v1`` is the same proto
promoted). So one servicer answers both: under the ``v1`` name it is registered by
hand with the ``v1alpha`` message classes, which read and write the same bytes, and
a ``v1`` descriptor (the ``v1alpha`` one renamed) is added to the pool so that
reflection can describe the ``v1`` service itself.

The ``_pb2`` modules protoc generates carry no comments, so reflection built on them
would describe lb.v1 without a word of its documentation. ``make protos`` also writes
``lb/v1/load_balancer.binpb``, a descriptor set with source info; the servicer here
answers for those files with it, so ``grpcurl describe`` shows the proto's comments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from lb_service.service.stack import Registrar

log = structlog.get_logger(__name__)

#: The v1alpha service, as grpcio-reflection names it.
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
#: The v1 service: the same proto, promoted.
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = ".grpc.reflection.v1alpha."
_V1_PACKAGE = ".grpc.reflection.v1."


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add the v1 reflection proto to ``pool``, built from v1alpha's, unless it is there."""
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return  # a newer grpcio-reflection (or another import) brought it
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # java_package and friends name v1alpha
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(_V1ALPHA_PACKAGE):
                field.type_name = _V1_PACKAGE + field.type_name[len(_V1ALPHA_PACKAGE) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
            method.output_type = method.output_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    pool.Add(proto)


def described_files(package: str = "lb.v1") -> dict[str, bytes]:
    """The serialized files, with source info, of ``package``'s descriptor sets, by file name.

    Empty, with a warning, when there are none: reflection still works, without comments.
    """
    files: dict[str, bytes] = {}
    try:
        entries = [e for e in resources.files(package).iterdir() if e.name.endswith(".binpb")]
        for entry in entries:
            for proto in descriptor_pb2.FileDescriptorSet.FromString(entry.read_bytes()).file:
                files[proto.name] = proto.SerializeToString()
    except (OSError, ModuleNotFoundError) as error:
        log.warning("reflection_without_comments", error=str(error))
    if not files:
        log.warning("reflection_without_comments", error=f"no descriptor set in {package}")
    return files


class DescribingReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, answering for some files with versions that keep comments."""

    def __init__(
        self,
        service_names: Iterable[str],
        described: Mapping[str, bytes],
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        """Serve reflection of ``service_names``; files named in ``described`` are sent as given."""
        super().__init__(service_names, pool=pool)
        self._described = described

    def _with_comments(self, response: Any) -> Any:
        files = response.file_descriptor_response.file_descriptor_proto
        for n, raw in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
            if name in self._described:
                files[n] = self._described[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return self._with_comments(super()._file_containing_symbol(request, fully_qualified_name))

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        return self._with_comments(
            super()._file_containing_extension(request, containing_type, extension_number)
        )


def enable_reflection(
    service_names: Iterable[str],
    server: Registrar,
    servicer: reflection_pb2_grpc.ServerReflectionServicer | None = None,
) -> None:
    """Serve reflection of ``service_names`` (and of both reflection services) on ``server``.

    ``servicer`` defaults to one over the default pool that sends lb.v1's files with
    their comments.
    """
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    _add_v1_descriptor(descriptor_pool.Default())
    if servicer is None:
        servicer = DescribingReflectionServicer(names, described_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_registered_method_handlers(V1_SERVICE_NAME, {"ServerReflectionInfo": v1})
