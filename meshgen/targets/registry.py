"""Every target, in the order the CLI lists them and ``meshgen all`` writes them.

Adding a target: a package under meshgen/targets/ whose ``TARGET`` implements the contract
(meshgen/targets/contract.py), its templates under templates/<name>/, and one entry here.
"""

from __future__ import annotations

from typing import Any

from meshgen.targets import envoy, istio, nginx, triton
from meshgen.targets.contract import Target

TARGETS: tuple[Target[Any], ...] = (istio.TARGET, envoy.TARGET, nginx.TARGET, triton.TARGET)


def target_named(name: str) -> Target[Any]:
    for target in TARGETS:
        if target.name == name:
            return target
    raise KeyError(name)
