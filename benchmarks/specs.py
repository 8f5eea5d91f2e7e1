"""Generated benchmark specs: N models, C clients, a mix of rules and identity kinds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

LOOPBACK_CLIENT = "client-0"  # allowed from 127.0.0.0/8: the data-plane benchmark's caller


def model_names(count: int, seed: int = 7) -> list[str]:
    """Realistic, random-looking names (no shared sequential prefix) so tries and regexes see real data."""
    rng = random.Random(seed)
    words = [
        "resnet",
        "bert",
        "llama",
        "fraud",
        "churn",
        "ranker",
        "ocr",
        "asr",
        "tts",
        "embed",
        "yolo",
        "clip",
        "t5",
        "gpt",
        "vit",
        "detr",
        "whisper",
        "mistral",
        "phi",
        "gemma",
    ]
    names: set[str] = set()
    while len(names) < count:
        names.add(f"{rng.choice(words)}-{rng.randrange(16**6):06x}.v{rng.randrange(1, 9)}")
    return sorted(names, key=lambda _: rng.random())


def make_spec(models: int, clients: int, *, mtls: bool = True) -> dict[str, Any]:
    """A spec with ``models`` models and ``clients`` clients.

    Rules: health for anyone; inference+metadata on ALL models for client-0 (a gateway); inference on a
    5-model slice per client (a tenant; every 4th also model-config); model-repository and statistics for
    an ops client; metrics for a monitoring client; a per-model deny of the repository. ``mtls`` False:
    only ipBlocks/header identities (a plaintext standalone proxy, as in the data-plane benchmark).
    """
    names = model_names(models)
    spec_clients: dict[str, dict[str, Any]] = {}
    for index in range(clients):
        name = f"client-{index}"
        kind = index % 4 if mtls else 2 + index % 2
        if index == 0:
            spec_clients[name] = {"ipBlocks": ["127.0.0.0/8"]}
        elif kind == 0:
            spec_clients[name] = {"principals": [f"cluster.local/ns/team-{index}/sa/client"]}
        elif kind == 1:
            spec_clients[name] = {"namespaces": [f"team-{index}"]}
        elif kind == 2:
            spec_clients[name] = {"ipBlocks": [f"10.{index // 250}.{index % 250}.0/24"]}
        else:
            spec_clients[name] = {
                "headers": {"x-tenant-token": f"token-{index:04d}"},
                "ipBlocks": [f"10.200.{index % 250}.0/24"],
            }
    rules: list[dict[str, Any]] = [
        {"allow": ["health"], "from": "anyone"},
        {"allow": ["inference", "metadata"], "models": names, "from": [LOOPBACK_CLIENT]},
    ]
    for index in range(1, clients):
        window = [names[(index * 5 + k) % models] for k in range(min(5, models))]
        categories = ["inference", "model-config"] if index % 4 == 0 else ["inference"]
        rules.append({"allow": categories, "models": window, "from": [f"client-{index}"]})
    ops = [f"client-{min(1, clients - 1)}"]
    rules.append({"allow": ["model-repository", "statistics"], "from": ops})
    rules.append({"allow": ["metrics"], "from": [f"client-{min(2, clients - 1)}"]})
    rules.append({"deny": ["model-repository"], "models": names[: max(1, models // 100)], "from": "anyone"})
    spec: dict[str, Any] = {
        "apiVersion": "meshgen/v1",
        "kind": "TritonAccessPolicy",
        "metadata": {"name": "bench", "namespace": "ml"},
        "workload": {"selector": {"app": "triton"}, "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}},
        "clients": spec_clients,
        "rules": rules,
        "standalone": {
            "listen": {"http": "127.0.0.1:18080", "grpc": "127.0.0.1:18081", "metrics": "127.0.0.1:18082"},
            "upstream": {"http": "127.0.0.1:18000", "grpc": "127.0.0.1:18001", "metrics": "127.0.0.1:18002"},
        },
    }
    if mtls:
        spec["standalone"]["tls"] = {
            "cert": "/etc/meshgen/tls.crt",
            "key": "/etc/meshgen/tls.key",
            "clientCA": "/etc/meshgen/ca.crt",
        }
    return spec


def write_spec(directory: Path, models: int, clients: int, *, mtls: bool = True) -> Path:
    path = directory / f"spec-{models}x{clients}{'' if mtls else '-plain'}.yaml"
    path.write_text(yaml.safe_dump(make_spec(models, clients, mtls=mtls), sort_keys=False), encoding="utf-8")
    return path
