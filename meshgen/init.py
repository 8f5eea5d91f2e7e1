"""``meshgen init``: a commented starter spec, optionally listing the models of a Triton model repository."""

from __future__ import annotations

import re
from pathlib import Path

from meshgen.errors import MeshgenError

# `name: "resnet50"` at the top level of a config.pbtxt (protobuf text format; quotes optional).
_CONFIG_NAME = re.compile(r'^name\s*:\s*"?([^"\s#]+)"?', re.MULTILINE)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

STARTER = """\
# A meshgen spec (meshgen/v1): who may reach which Triton APIs and models. Reference: docs/spec.md.
# Everything not granted by a rule below is denied (default deny).
# Next steps: meshgen lint {file} --strict && meshgen explain {file} && meshgen istio {file}
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata:
  name: {name}
  namespace: {namespace}
workload:
  selector: {{app: {name}}}  # the labels of the Triton pods
  ports: {{http: 8000, grpc: 8001, metrics: 8002}}
mtls:
  mode: STRICT  # every caller presents a mesh certificate
clients:
  # One client per identity kind; uncomment one, rename it and use it in a rule below.
  # gateway: {{principals: ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}
  # web: {{namespaces: [web]}}
  # ops: {{ipBlocks: ["10.20.0.0/16"]}}
  # admin: {{headers: {{x-triton-admin: {{env: TRITON_ADMIN_TOKEN}}}}}}  # the value is read at generation time
  # tenant: {{jwt: {{issuer: "https://login.example.com/", audiences: [triton], jwks: {{file: jwks.json}}}}}}
  monitoring: {{ipBlocks: ["10.60.0.0/16"]}}  # your Prometheus' network
rules:
  - allow: [health]  # liveness and readiness probes
    from: anyone
  - allow: [metrics]
    from: [monitoring]
{models}"""

MODELS = """\
  # Per-model inference: uncomment, and name the clients (defined above) that may call these models.
  # - allow: [inference, metadata]
  #   models: [{models}]
  #   from: [gateway]
"""

NO_MODELS = """\
  # Per-model inference: uncomment, list your models (or run meshgen init --model-repository DIR) and clients.
  # - allow: [inference, metadata]
  #   models: [my-model]
  #   from: [gateway]
"""


def repository_models(directory: str) -> list[str]:
    """Models of a Triton model repository: each subdirectory with a config.pbtxt, by the name inside it
    (or the directory's name when it has none), sorted; names a spec cannot hold are left out."""
    root = Path(directory)
    if not root.is_dir():
        raise MeshgenError(f"--model-repository: {directory!r} is not a directory")
    names = set()
    for config in sorted(root.glob("*/config.pbtxt")):
        try:
            text = config.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise MeshgenError(f"--model-repository: cannot read {config}: {error.strerror}") from None
        found = _CONFIG_NAME.search(text)
        name = found.group(1) if found else config.parent.name
        if _MODEL_NAME.match(name) and name != "stats":
            names.add(name)
    return sorted(names)


def starter_spec(
    file: str = "spec.yaml", name: str = "triton", namespace: str = "inference", models: list[str] | None = None
) -> str:
    listed = MODELS.format(models=", ".join(models)) if models else NO_MODELS
    return STARTER.format(file=file, name=name, namespace=namespace, models=listed)
