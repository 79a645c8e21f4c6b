"""The gRPC layer: servicer, protobuf conversion, status mapping and the server."""
