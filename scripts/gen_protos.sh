#!/usr/bin/env bash
# Generate the lb.v1 Python stubs and their type stubs into OUTDIR (default: generated).
# Used by `make protos` (writes generated/) and `make check-protos` (writes a temp dir to diff).
set -euo pipefail
out=${1:-generated}
bin=${BIN:-.venv/bin}
mkdir -p "$out/lb/v1"
"$bin/python" -m grpc_tools.protoc -I protos \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/lb/v1/*.proto
# The same files as a descriptor set with source info: reflection serves it, so the
# proto's comments reach `grpcurl describe` (the _pb2 modules carry no comments).
"$bin/python" -m grpc_tools.protoc -I protos --include_source_info \
  --descriptor_set_out="$out/lb/v1/load_balancer.binpb" protos/lb/v1/*.proto
printf '"""Generated lb.v1 stubs; produced by `make protos`, never edited."""\n' > "$out/lb/__init__.py"
cp "$out/lb/__init__.py" "$out/lb/v1/__init__.py"
touch "$out/lb/py.typed"
