"""gRPC server reflection under both names clients ask for: ``v1`` and ``v1alpha``.

grpcurl and current gRPC tools ask ``grpc.reflection.v1.ServerReflection`` first;
older ones ask ``v1alpha``. The installed grpcio-reflection serves only ``v1alpha``,
whose messages are the same, field for field, as ``v1``'s (``v1`` is the same proto
promoted). So one servicer answers both: under the ``v1`` name it is registered by
hand with the ``v1alpha`` message classes, which read and write the same bytes, and
a ``v1`` descriptor (the ``v1alpha`` one renamed) is added to the pool so that
reflection can describe the ``v1`` service itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

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


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.aio.Server,
    servicer: reflection_pb2_grpc.ServerReflectionServicer | None = None,
) -> None:
    """Serve reflection of ``service_names`` (and of both reflection services) on ``server``.

    ``servicer`` defaults to grpcio-reflection's asyncio one over the default pool.
    """
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    _add_v1_descriptor(descriptor_pool.Default())
    if servicer is None:
        servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1}),)
    )
