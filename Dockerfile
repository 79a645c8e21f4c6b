# lb-service container image: `docker build -t lb-service .` from a checkout.
# Two stages: the first installs the service and its runtime dependencies (no dev extras)
# into a virtualenv; the second copies only that virtualenv onto a clean slim base, so
# the image carries no pip cache, build tree or compiler.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/lb-service
WORKDIR /src
# Only what `pip install .` reads (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY generated/ generated/
COPY lb_service/ lb_service/
RUN /opt/lb-service/bin/pip install --no-cache-dir .

# The same base as the build stage: the virtualenv links to its interpreter by path.
FROM ${PYTHON_IMAGE}
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 lb \
    && useradd --system --uid 10001 --gid lb --no-create-home --shell /usr/sbin/nologin lb
COPY --from=build /opt/lb-service /opt/lb-service
# pip compiled the bytecode at install time, so nothing is written at run time and the
# root filesystem can be mounted read-only; logs go straight to stderr.
ENV PATH=/opt/lb-service/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 50051: gRPC (lb.v1, grpc.health.v1, reflection); 9464: Prometheus /metrics over HTTP.
EXPOSE 50051 9464
# grpc.health.v1 on the default target 127.0.0.1:50051: SERVING once the server is up and,
# with a Redis store, only while Redis answers. Change --target if you change --listen.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["lb-service", "health"]
ENTRYPOINT ["lb-service"]
# Listen on every interface: inside a container the loopback default is unreachable.
CMD ["serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
