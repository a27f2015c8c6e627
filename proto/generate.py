"""Generate the Python gRPC code for proto/ciphercare/v1 next to the .proto files.

Run ``python proto/generate.py`` after editing a .proto; the generated files are
checked in, and tests/test_proto_codegen.py fails when they are stale. The
generator is pinned by the ``dev`` extra (grpcio-tools 1.71.x, protoc 29), the
newest that targets protobuf 5.x, which hyperledger-fabric-protos requires.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "ciphercare" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc for every .proto into ``out_dir`` (laid out as ciphercare/v1/...)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted((out_dir / "ciphercare" / "v1").glob("*_pb2*.py*"))


if __name__ == "__main__":
    written = generate(PROTO_ROOT)
    for path in written:
        print(path.relative_to(PROTO_ROOT))
    sys.exit(0)
