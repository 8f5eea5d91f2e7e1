"""tritonclient through each generated proxy (Envoy bootstrap, nginx --full) in front of the real Triton.

Per spec (tests/e2e/specs/) and target, every identity runs the whole call list (tests/e2e/calls.py).
For each call, ``decide()`` on the exact wire requests it produced says whether it is granted:

* granted: it succeeds, with the right inference result;
* denied: it fails with the proxy's refusal (HTTP 403 / gRPC PERMISSION_DENIED) and never reaches
  Triton (no arrival line in Triton's verbose log; Triton's per-model inference counts move by
  exactly the granted inferences);
* the same wire requests, run through the Istio evaluator against the generated AuthorizationPolicies,
  get the same decision; every path and gRPC method sent is in meshgen's catalog under the call's
  category (catalog drift check).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e '.[test,e2e]')")

import yaml

from meshgen.catalog import load_catalog
from meshgen.features import Feature
from meshgen.policy import compile_policy
from meshgen.spec import LoadedSpec, Spec, load_spec
from meshgen.targets.registry import target_named
from tests.e2e.exercise import SPECS_DIR, Outcome, ProxyPorts, run_pass
from tests.e2e.triton_server import TritonServer
from tests.support.envoy_process import EnvoyProcess
from tests.support.istio_matrix import istio_mismatches
from tests.support.matrix import loopback_variant
from tests.support.nginx_process import NGINX, NginxProcess
from tests.support.processes import free_port
from tests.support.targets import ISTIO, enforced_by, envoy_output, istio_output, nginx_output

pytestmark = pytest.mark.e2e

SPECS = ("edge", "overlap")
TARGETS = ("envoy", "nginx")
MAX_REPORTED = 20
HTTP_REFUSAL = "403"
GRPC_REFUSAL = "StatusCode.PERMISSION_DENIED"


@dataclass
class Exercised:
    spec_name: str
    target: str
    spec: Spec
    loaded: LoadedSpec
    outcomes: list[Outcome]
    seconds: float
    enforced: frozenset[Feature]  # the proxy's capabilities: decide() with them is its reference

    def granted(self, outcome: Outcome) -> bool:
        return outcome.expected_allowed(self.spec, self.enforced)


def load_e2e_spec(name: str) -> tuple[Spec, LoadedSpec]:
    """The spec with its ipBlocks moved onto 127.0.x.0/24, so clients here can come from each address."""
    loaded = load_spec(str(SPECS_DIR / f"{name}.yaml"))
    spec = loopback_variant(loaded.spec)
    return spec, LoadedSpec(spec, loaded.source)


def _proxy(target: str, loaded: LoadedSpec, triton: TritonServer, directory: Path) -> Any:
    """A started proxy (a context manager) and its listening ports, in front of ``triton``."""
    ports = ProxyPorts(free_port(), free_port(), free_port())
    listen = {
        "http": f"127.0.0.1:{ports.http}",
        "grpc": f"127.0.0.1:{ports.grpc}",
        "metrics": f"127.0.0.1:{ports.metrics}",
    }
    upstream = {"http": triton.http_url, "grpc": triton.grpc_url, "metrics": f"127.0.0.1:{triton.ports.metrics}"}
    policy = compile_policy(loaded)
    if target == "envoy":
        admin_port = free_port()
        config = directory / "envoy.json"
        config.write_text(
            envoy_output(policy, bootstrap=True, listen=listen, upstream=upstream, admin=f"127.0.0.1:{admin_port}"),
            encoding="utf-8",
        )
        return EnvoyProcess(config, admin_port, directory / "envoy.log"), ports
    text = nginx_output(policy, full=True, daemon=False, prefix=None, listen=listen, upstream=upstream)
    return NginxProcess(text, [ports.http, ports.grpc, ports.metrics]), ports


@pytest.fixture(scope="module", params=[(s, t) for s in SPECS for t in TARGETS], ids=lambda p: f"{p[0]}-{p[1]}")
def exercised(
    request: pytest.FixtureRequest, triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exercised]:
    # Module scope, main thread: Envoy dies with the thread that started it (PR_SET_PDEATHSIG).
    spec_name, target = request.param
    if target == "nginx" and NGINX is None:
        pytest.skip("nginx is not installed")
    spec, loaded = load_e2e_spec(spec_name)
    started = time.monotonic()
    process, ports = _proxy(target, loaded, triton, tmp_path_factory.mktemp(f"{spec_name}-{target}"))
    with process:
        outcomes = run_pass(triton, ports, spec)
    seconds = time.monotonic() - started
    enforced = enforced_by(target_named(target), compile_policy(loaded))
    done = Exercised(spec_name, target, spec, loaded, outcomes, seconds, enforced)
    granted = sum(map(done.granted, outcomes))
    print(f"\n{spec_name}/{target}: {len(outcomes)} calls ({granted} granted) in {seconds:.1f} s")
    print(summary(done))
    yield done


def summary(exercised: Exercised) -> str:
    """One line per call: the identities it was granted to (the rest were refused)."""
    granted: dict[str, list[str]] = {}
    for outcome in exercised.outcomes:
        names = granted.setdefault(outcome.call.label, [])
        if exercised.granted(outcome):
            names.append(outcome.identity.label)
    return "\n".join(f"  {label:<40} granted to: {', '.join(names) or '-'}" for label, names in granted.items())


def _report(problems: list[str], total: int) -> str:
    return f"{len(problems)} of {total} calls:\n" + "\n".join(problems[:MAX_REPORTED])


def test_every_call_is_one_wire_request(exercised: Exercised) -> None:
    wrong = [f"{o.label}: {[(w.method, w.path) for w in o.wire]}" for o in exercised.outcomes if len(o.wire) != 1]
    assert not wrong, _report(wrong, len(exercised.outcomes))


def test_both_grants_and_refusals_are_exercised(exercised: Exercised) -> None:
    decisions = Counter((o.call.protocol, exercised.granted(o)) for o in exercised.outcomes)
    for protocol in ("http", "grpc"):  # metrics: granted by edge only, refused in both specs
        assert decisions[(protocol, True)] and decisions[(protocol, False)], decisions


def test_granted_calls_succeed_with_correct_results(exercised: Exercised) -> None:
    problems = []
    for outcome in exercised.outcomes:
        if not exercised.granted(outcome):
            continue
        if outcome.error is not None:
            problems.append(f"{outcome.label}: {outcome.error.status()} {outcome.error.message()}")
        elif not outcome.call.check(outcome.result):
            problems.append(f"{outcome.label}: wrong answer {outcome.result!r}")
        elif not all(wire.status in ("200", "OK") for wire in outcome.wire):
            problems.append(f"{outcome.label}: wire status {[wire.status for wire in outcome.wire]}")
    assert not problems, _report(problems, len(exercised.outcomes))


def _refused_by_proxy(outcome: Outcome) -> str | None:
    """Why the outcome is not the proxy's refusal, or None if it is."""
    grpc = outcome.call.protocol == "grpc"
    refusal = GRPC_REFUSAL if grpc else HTTP_REFUSAL
    wire_refusal = "PERMISSION_DENIED" if grpc else HTTP_REFUSAL
    if any(wire.status != wire_refusal for wire in outcome.wire):
        return f"wire status {[wire.status for wire in outcome.wire]}, expected {wire_refusal}"
    if outcome.call.truthy and outcome.error is None:
        # tritonclient.http's is_*_live/ready turn any non-200 into False instead of raising.
        return None if outcome.result is False else f"answered {outcome.result!r}"
    if outcome.error is None:
        return f"succeeded with {outcome.result!r}"
    if outcome.error.status() != refusal:
        return f"failed with {outcome.error.status()} {outcome.error.message()}"
    return None


def test_denied_calls_get_the_proxys_refusal(exercised: Exercised) -> None:
    problems = []
    for outcome in exercised.outcomes:
        if exercised.granted(outcome):
            continue
        why = _refused_by_proxy(outcome)
        if why is not None:
            problems.append(f"{outcome.label}: {why}")
    assert not problems, _report(problems, len(exercised.outcomes))


def test_denied_calls_never_reach_triton(exercised: Exercised) -> None:
    problems = []
    for outcome in exercised.outcomes:
        if outcome.call.protocol == "metrics":
            continue  # Triton does not log metrics scrapes; the 403 above is the proof there
        allowed = exercised.granted(outcome)
        if outcome.reached_triton() != allowed:
            problems.append(
                f"{outcome.label}: granted={allowed} but Triton's log says reached={outcome.reached_triton()}"
            )
    assert not problems, _report(problems, len(exercised.outcomes))


def test_triton_counted_exactly_the_granted_inferences(exercised: Exercised) -> None:
    """Triton's own statistics: +1 success for each granted inference call, unchanged for each denied one."""
    problems = []
    inference = [o for o in exercised.outcomes if o.call.category == "inference"]
    for outcome in inference:
        wanted = int(exercised.granted(outcome))
        if outcome.inferences_counted != wanted:
            problems.append(f"{outcome.label}: Triton counted {outcome.inferences_counted}, expected {wanted}")
    assert not problems, _report(problems, len(inference))


def test_istio_decides_the_recorded_wire_like_decide(exercised: Exercised) -> None:
    """Istio cannot run here: the generated AuthorizationPolicies are evaluated on the exact requests."""
    policy = compile_policy(exercised.loaded)
    documents = list(yaml.safe_load_all(istio_output(policy)))
    matrix = [(outcome.label, outcome.request(wire)) for outcome in exercised.outcomes for wire in outcome.wire]
    problems = istio_mismatches(exercised.spec, documents, matrix, enforced_by(ISTIO, policy))
    assert not problems, _report(problems, len(matrix))


def test_every_wire_request_is_in_the_catalog_under_its_category(exercised: Exercised) -> None:
    catalog = load_catalog()
    problems = []
    for outcome in exercised.outcomes:
        for wire in outcome.wire:
            if wire.protocol == "grpc":
                method = catalog.match_grpc(wire.path)
                category = method.category if method else None
            else:
                match = catalog.match_http(wire.protocol, wire.path.split("?", 1)[0])
                category = match.endpoint.category if match else None
                if match is not None and wire.method not in match.endpoint.methods:
                    category = f"{category} (but not {wire.method})"
            if category != outcome.call.category:
                problems.append(
                    f"{outcome.label}: {wire.protocol} {wire.method} {wire.path} -> catalog says "
                    f"{category}, expected {outcome.call.category}"
                )
    assert not problems, _report(problems, len(exercised.outcomes))
