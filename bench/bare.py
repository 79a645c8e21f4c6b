"""The bare echo server the RPC figures are judged against: ``python -m bench.bare``.

A grpc.aio server with nothing of lb-service in it: no interceptors, no wrapping, no
logging configured, no other service, on asyncio's own event loop (the default a
grpc.aio server gets; lb-service's runs on uvloop where it can). It serves one method,
``/bench.Echo/Echo`` (a SelectAgentRequest in, an empty SelectAgentResponse out),
registered as generated code registers any service's methods. Whatever SelectAgent costs beyond this
server's echo is what lb-service adds: its server stack, servicer and decision.

Prints ``port <n>`` once serving; stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grpc
from lb.v1 import load_balancer_pb2 as pb

#: The echo service and method, and the method's full name.
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


async def _echo(request: pb.SelectAgentRequest, context: grpc.aio.ServicerContext) -> object:
    return pb.SelectAgentResponse()


def echo_handlers() -> dict[str, grpc.RpcMethodHandler]:
    """The echo service's method handlers, by method name."""
    return {
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo,
            request_deserializer=pb.SelectAgentRequest.FromString,
            response_serializer=pb.SelectAgentResponse.SerializeToString,
        )
    }


async def _serve() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers = echo_handlers()
    # As generated add_*Servicer_to_server functions do.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),))
    server.add_registered_method_handlers(ECHO_SERVICE, handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"port {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def main() -> None:
    """Serve until standard input closes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    args = parser.parse_args()
    if args.cpu:
        os.sched_setaffinity(0, args.cpu)
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
