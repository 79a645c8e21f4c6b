"""lb-service: a gRPC control plane that picks which agent takes each request."""
