"""A CRI client for the tests, as kubelet would call the runtime.

    python cri.py SOCKET METHOD [JSON]

calls RuntimeService.METHOD with the request given as JSON (protobuf's JSON mapping) and
prints the response as JSON on stdout. A gRPC error prints {"error": ..., "code": ...} and
exits 3. The proto is compiled on first use into $CRI_GEN_DIR (default: beside this file),
one directory per Python version (the host's venv and the sid tree's Debian packages share
target/, and their protoc versions differ).
"""
import importlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "runtime_v1.proto"


def load():
    gen = os.path.join(os.environ.get("CRI_GEN_DIR", os.path.join(HERE, "gen")),
                       "py%d.%d" % sys.version_info[:2])
    os.makedirs(gen, exist_ok=True)
    out = os.path.join(gen, "runtime_v1_pb2.py")
    src = os.path.join(HERE, PROTO)
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        from grpc_tools import protoc

        rc = protoc.main(["protoc", "-I" + HERE, "--python_out=" + gen,
                          "--grpc_python_out=" + gen, src])
        if rc != 0:
            sys.exit("cri.py: protoc failed on " + src)
    sys.path.insert(0, gen)
    return importlib.import_module("runtime_v1_pb2"), importlib.import_module("runtime_v1_pb2_grpc")


def main():
    sock, method = sys.argv[1], sys.argv[2]
    body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    import grpc
    from google.protobuf import json_format

    pb, pb_grpc = load()
    request = json_format.ParseDict(body, getattr(pb, method + "Request")())
    with grpc.insecure_channel("unix://" + sock) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        try:
            response = getattr(stub, method)(request, timeout=120)
        except grpc.RpcError as e:
            print(json.dumps({"error": e.details(), "code": str(e.code())}))
            sys.exit(3)
    print(json_format.MessageToJson(response, preserving_proto_field_name=True))


if __name__ == "__main__":
    main()
