"""Check that the project's .proto files match the official Python stubs.

The Rust gateway compiles its own copies of the Riva and gRPC health schemas
(under crates/proto/proto/). Wire compatibility depends only on packages, names, field
numbers, types, labels, oneofs and maps, so this script compiles our files
with grpc_tools.protoc and compares every message, enum and service they
define with the descriptors of the same full name shipped in:

  * nvidia-riva-client      (riva.client.proto.riva_*_pb2)
  * grpcio-health-checking  (grpc_health.v1.health_pb2)
  * tritonclient            (tritonclient.grpc.service_pb2, model_config_pb2)

Every message we define must carry all of its official fields, except the
read-only subsets named in SUBSETS (Triton's model configuration, which the
gateway only decodes, and the inference service, of which it calls a few
rpcs): there every field or rpc we keep must match, and the rest is listed
as a note.

Usage:  python tests/conformance/check_protos.py [--proto-dir DIR]
Exit status: 0 all match, 1 mismatches (listed on stderr), 2 compile failure.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

REPO = Path(__file__).resolve().parents[2]

# Our file (relative to proto/) -> module holding the official descriptor.
# Note: riva.client.proto.health_pb2 must NOT be imported alongside
# grpc_health (both register grpc.health.v1.* and the pool rejects that);
# grpc_health is the complete upstream one, so it is the reference.
REFERENCE = {
    "riva/riva_audio.proto": "riva.client.proto.riva_audio_pb2",
    "riva/riva_common.proto": "riva.client.proto.riva_common_pb2",
    "riva/riva_asr.proto": "riva.client.proto.riva_asr_pb2",
    "grpc/health/v1/health.proto": "grpc_health.v1.health_pb2",
    "triton/model_config.proto": "tritonclient.grpc.model_config_pb2",
    "triton/grpc_service.proto": "tritonclient.grpc.service_pb2",
}

# Declared subsets: decoded-only messages and a client-side service.
SUBSETS = {
    "inference.ModelConfig",
    "inference.ModelInput",
    "inference.ModelOutput",
    "inference.ModelSequenceBatching",
    "inference.GRPCInferenceService",
}

FDP = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {v: k for k, v in FDP.Type.items()}
LABEL_NAMES = {v: k for k, v in FDP.Label.items()}


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.messages = self.fields = self.enums = self.services = self.rpcs = 0

    def err(self, msg: str) -> None:
        self.errors.append(msg)

    # -- fields -------------------------------------------------------------
    @staticmethod
    def field_facts(desc, proto: descriptor_pb2.DescriptorProto) -> dict[int, dict]:
        facts = {}
        for fd, fp in zip(desc.fields, proto.field):
            oneof = proto.oneof_decl[fp.oneof_index].name if fp.HasField("oneof_index") else None
            facts[fp.number] = {
                "name": fp.name,
                "type": TYPE_NAMES[fp.type],
                "label": LABEL_NAMES[fp.label],
                "type_name": fp.type_name.lstrip(".") or None,
                "oneof": oneof,
                "proto3_optional": fp.proto3_optional,
                "map": bool(fd.message_type and fd.message_type.GetOptions().map_entry),
                "json_name": fd.json_name,
            }
        return facts

    def message(self, ours, ref) -> None:
        self.messages += 1
        name = ours.full_name
        op, rp = descriptor_pb2.DescriptorProto(), descriptor_pb2.DescriptorProto()
        ours.CopyToProto(op)
        ref.CopyToProto(rp)
        of, rf = self.field_facts(ours, op), self.field_facts(ref, rp)
        for num, facts in sorted(of.items()):
            self.fields += 1
            want = rf.get(num)
            if want is None:
                self.err(f"{name}: field {facts['name']} = {num} is not in the official schema")
                continue
            for key, val in facts.items():
                if val != want[key]:
                    self.err(f"{name}.{facts['name']} (#{num}): {key} is {val!r}, official {want[key]!r}")
        subset = name in SUBSETS
        left_out = [want["name"] for num, want in sorted(rf.items()) if num not in of]
        if subset:
            if left_out:
                print(f"note: {name} is a declared read-only subset; leaves out {', '.join(left_out)}")
        else:
            for num, want in sorted(rf.items()):
                if num not in of:
                    self.err(f"{name}: missing official field {want['name']} = {num} "
                             f"({want['label']} {want['type_name'] or want['type']})")
        ours_oneofs = sorted(o.name for o in op.oneof_decl)
        ref_oneofs = sorted(o.name for o in rp.oneof_decl)
        if subset and set(ours_oneofs) <= set(ref_oneofs):
            pass
        elif ours_oneofs != ref_oneofs:
            self.err(f"{name}: oneofs {[o.name for o in op.oneof_decl]} "
                     f"!= official {[o.name for o in rp.oneof_decl]}")
        if ours.GetOptions().map_entry != ref.GetOptions().map_entry:
            self.err(f"{name}: map_entry differs")
        self.nested(name, ours.nested_types_by_name, ref.nested_types_by_name, self.message, subset)
        self.nested(name, ours.enum_types_by_name, ref.enum_types_by_name, self.enum, subset)

    def nested(self, owner, ours: dict, ref: dict, check, subset: bool = False) -> None:
        for key, desc in ours.items():
            if key in ref:
                check(desc, ref[key])
            else:
                self.err(f"{owner}: nested type {key} is not in the official schema")
        for key in sorted(set(ref.keys()) - set(ours.keys())):
            if not subset:
                self.err(f"{owner}: missing official nested type {key}")

    def enum(self, ours, ref) -> None:
        self.enums += 1
        ov = {v.name: v.number for v in ours.values}
        rv = {v.name: v.number for v in ref.values}
        if ov != rv:
            self.err(f"{ours.full_name}: values {ov} != official {rv}")

    def service(self, ours, ref) -> None:
        self.services += 1
        om, rm = ours.methods_by_name, ref.methods_by_name
        for name in sorted(set(om.keys()) | set(rm.keys())):
            if name not in rm:
                self.err(f"{ours.full_name}: rpc {name} is not in the official schema")
            elif name not in om:
                if ours.full_name not in SUBSETS:
                    self.err(f"{ours.full_name}: missing official rpc {name}")
            else:
                self.rpcs += 1
                o, r = om[name], rm[name]
                for attr in ("input_type", "output_type"):
                    if getattr(o, attr).full_name != getattr(r, attr).full_name:
                        self.err(f"{ours.full_name}.{name}: {attr} {getattr(o, attr).full_name} "
                                 f"!= official {getattr(r, attr).full_name}")
                for attr in ("client_streaming", "server_streaming"):
                    if getattr(o, attr) != getattr(r, attr):
                        self.err(f"{ours.full_name}.{name}: {attr} {getattr(o, attr)} "
                                 f"!= official {getattr(r, attr)}")

    # -- files --------------------------------------------------------------
    def file(self, ours, ref) -> None:
        if ours.package != ref.package:
            self.err(f"{ours.name}: package {ours.package!r} != official {ref.package!r}")
        for kind, check in (("message_types_by_name", self.message),
                            ("enum_types_by_name", self.enum),
                            ("services_by_name", self.service)):
            mine, theirs = getattr(ours, kind), getattr(ref, kind)
            for key, desc in mine.items():
                if key in theirs:
                    check(desc, theirs[key])
                else:
                    self.err(f"{ours.name}: {desc.full_name} is not in official {ref.name}")
            skipped = sorted(set(theirs.keys()) - set(mine.keys()))
            if skipped:
                print(f"note: {ours.name} leaves out official {', '.join(skipped)}")


def compile_ours(proto_dir: Path) -> descriptor_pool.DescriptorPool:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.pb"
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
               f"--descriptor_set_out={out}", "--include_imports", *REFERENCE]
        res = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True)
        if res.returncode != 0:
            sys.stderr.write(f"protoc failed ({' '.join(cmd)}):\n{res.stderr}")
            sys.exit(2)
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for fp in fds.file:
        pool.Add(fp)
    return pool


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto-dir", type=Path, default=REPO / "crates" / "proto" / "proto")
    args = ap.parse_args()

    pool = compile_ours(args.proto_dir.resolve())
    checker = Checker()
    for path, module in REFERENCE.items():
        checker.file(pool.FindFileByName(path), importlib.import_module(module).DESCRIPTOR)

    print(f"{checker.messages} messages, {checker.fields} fields, {checker.enums} enums, "
          f"{checker.services} services ({checker.rpcs} rpcs) checked")
    if checker.errors:
        sys.stderr.write(f"{len(checker.errors)} mismatch(es) with the official schemas:\n")
        for e in checker.errors:
            sys.stderr.write(f"  - {e}\n")
        return 1
    print("OK: proto/ matches nvidia-riva-client, grpcio-health-checking and tritonclient")
    return 0


if __name__ == "__main__":
    sys.exit(main())
