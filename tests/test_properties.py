"""Property-based conformance: for any valid spec (tests/support/spec_strategy.py), every target's output
is accepted by the real tool and grants exactly what ``decide()`` says.

- Istio: every document passes the CRD schema/CEL/webhook checks and the Istio evaluator agrees with
  ``decide()`` on the property matrix; refusals are only the documented ones.
- Envoy: the ``--bootstrap`` output passes ``envoy --mode validate`` (batched in a thread pool after the
  examples are generated: one process per config is all ``--mode validate`` takes).
- nginx: ``--full`` passes ``nginx -t`` when nginx can express the spec; otherwise the documented error.
- Real traffic: a sample of generated specs on a real Envoy and a real nginx, zero mismatches.

Example counts: the floors below apply to the default (CI, derandomized) profile; a profile with more
examples (``--hypothesis-profile=deep``: 2,000) raises them. Each property prints how many ran.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.catalog import load_catalog
from meshgen.errors import TargetError
from meshgen.policy import Policy, Request, compile_policy, decide
from meshgen.spec import LoadedSpec, Spec
from meshgen.spec.model import Standalone, Tls
from meshgen.targets.nginx.flags import SAFE_HEADER_VALUE_CHARS
from tests.istio_validation import ENVOY_FILTER_WARNING, validate_istio_document, webhook_warnings
from tests.support.envoy_process import validate as envoy_validate
from tests.support.goldens import load_case
from tests.support.istio_matrix import istio_mismatches
from tests.support.matrix import (
    EXTRA_GRPC,
    EXTRA_PATHS,
    HTTP_METHODS,
    LOOPBACK_OUTSIDER_IP,
    OPENAI_EXTRA_PATHS,
    OUTSIDER_IP,
    RARE_METHODS,
    UNLISTED_MODEL,
    BodyRequest,
    http_ports,
    identities,
    json_bodies,
    json_request,
)
from tests.support.nginx_process import NGINX, nginx_prefix, nginx_test
from tests.support.pki import TestCA
from tests.support.spec_strategy import GeneratedSpec, proxy_specs, specs
from tests.support.targets import envoy_output, istio_output, nginx_output

# celpy (the CEL evaluator behind tests/istio_validation.py) raises the recursion limit on first use;
# hypothesis warns that it cannot restore it. Harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")

WORKERS = max(2, os.cpu_count() or 2)
# Validation only parses: these addresses are never bound.
LISTEN = {
    "http": "127.0.0.1:18080",
    "grpc": "127.0.0.1:18081",
    "metrics": "127.0.0.1:18082",
    "openai": "127.0.0.1:19090",
}
UPSTREAM = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001", "metrics": "127.0.0.1:8002", "openai": "127.0.0.1:9000"}
NEAR_MISS_MODELS = (UNLISTED_MODEL, "stats", "Resnet50")
ALL_METHODS = (*HTTP_METHODS, *RARE_METHODS)


def examples(floor: int, *, share: int = 1) -> int:
    """``floor`` in CI; a profile that asks for more (deep: 2,000) gets ``its count // share``."""
    return max(floor, settings.default.max_examples // share)


def property_settings(floor: int, *, share: int = 1) -> settings:
    return settings(
        max_examples=examples(floor, share=share),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the property matrix -----------------------------------------------------------------------------


def property_matrix(spec: Spec, outsider_ip: str = OUTSIDER_IP) -> list[tuple[str, Request]]:
    """Every catalog endpoint and gRPC method for every identity of tests/support/matrix.py, with fewer
    variants than ``full_matrix`` so hundreds of specs fit the time budget.

    Per (endpoint, identity): the endpoint's own methods plus one other method, on one listed model and
    one near-miss model (unlisted, ``stats``, wrong case), rotated over identities and endpoints so that
    across one spec every method and model meets every endpoint kind. The endpoint's path is also sent
    to the other HTTP port (and to the OpenAI frontend's, where the spec serves it). A JSON body route
    (the OpenAI inference routes) names the models in its body instead, and also gets one body whose
    model a proxy cannot read (rotated over the matrix's unreadable bodies). gRPC: every method for
    every identity. Only the ports the spec serves.
    """
    listed = sorted({model for rule in spec.rules for model in rule.models or ()})
    served = http_ports(spec)
    matrix: list[tuple[str, Request]] = []
    for person_index, person in enumerate(identities(spec, outsider_ip)):

        def add(port: str, method: str, path: str, who: Any = person, body: str | None = "") -> None:
            label = f"{port} {method} {path}{f' model={body!r}' if body else ''} as {who.label}"
            matrix.append((label, Request(port, method, path, who.identity, body_model=body)))  # type: ignore[arg-type]

        for endpoint_index, endpoint in enumerate(load_catalog().http):
            if endpoint.port not in served:
                continue
            turn = person_index + endpoint_index
            models = [NEAR_MISS_MODELS[turn % len(NEAR_MISS_MODELS)]]
            if listed:
                models.insert(0, listed[turn % len(listed)])
            other_method = next(
                m
                for step in range(len(ALL_METHODS))
                if (m := ALL_METHODS[(turn + step) % len(ALL_METHODS)]) not in endpoint.methods
            )
            if endpoint.body_model:
                path = endpoint.template
                for model in models:
                    request = json_request(endpoint.port, path, model, person.identity)
                    matrix.append((f"{endpoint.port} POST {path} [model={model!r}] as {person.label}", request))
                unreadable = [b for b in json_bodies(spec, path) if not b[2]]
                label, content_type, body_model, payload = unreadable[turn % len(unreadable)]
                request = BodyRequest(
                    endpoint.port, "POST", path, person.identity, body_model, content_type=content_type, body=payload
                )
                matrix.append((f"{endpoint.port} POST {path} [{label}] as {person.label}", request))
                add(endpoint.port, other_method, path)
            else:
                for model in models if endpoint.model_scoped else [""]:
                    path = endpoint.template.replace("{model}", model).replace("{version}", "1")
                    path = path.replace("{region}", "r0").replace("{repo}", "repo0")
                    for method in (*endpoint.methods, other_method):
                        add(endpoint.port, method, path)
            # The same path on the other HTTP port must never borrow this port's grants.
            for other in {"http": ("metrics", "openai"), "metrics": ("http",), "openai": ("http",)}[endpoint.port]:
                if other in served:
                    add(other, endpoint.methods[0], path)
        for port in served:
            for path_index, path in enumerate(OPENAI_EXTRA_PATHS if port == "openai" else EXTRA_PATHS):
                add(port, HTTP_METHODS[(person_index + path_index) % len(HTTP_METHODS)], path)
            add(port, "GET", f"{'/health/ready' if port == 'openai' else '/v2/health/live'}?q=1")
        for method_index, grpc_method in enumerate(load_catalog().grpc):
            # Model-scoped methods name a listed model, a near miss, or one the guard cannot prove (None).
            turn = person_index + method_index
            bodies: list[str | None] = [""]
            if grpc_method.model_scoped and listed:
                bodies = [listed[turn % len(listed)], NEAR_MISS_MODELS[turn % len(NEAR_MISS_MODELS)], None]
            for body in bodies:
                add("grpc", "POST", grpc_method.path, body=body)
        for path in EXTRA_GRPC:
            add("grpc", "POST", path)
    return matrix


# --- shared expectations -----------------------------------------------------------------------------


def rule_clients(spec: Spec) -> dict[str, Any]:
    """Clients some rule names (unused clients reach no target)."""
    used = {name for rule in spec.rules if rule.from_ != "anyone" for name in rule.from_}
    return {name: client for name, client in spec.clients.items() if name in used}


def needs_mtls(spec: Spec) -> list[str]:
    return sorted(name for name, client in rule_clients(spec).items() if client.principals or client.namespaces)


def istio_refusals(spec: Spec) -> list[str]:
    """Documented Istio refusals: a header value with a leading/trailing '*' (a wildcard to Istio)."""
    return [
        rf"istio: client '{name}': header '{re.escape(header.lower())}': .*wildcard"
        for name, client in rule_clients(spec).items()
        for header, value in (client.headers or {}).items()
        if str(value).startswith("*") or str(value).endswith("*")
    ]


def nginx_refusals(spec: Spec) -> list[str]:
    """Documented nginx refusals: mTLS identities, and header values outside nginx's safe characters."""
    expected: list[str] = []
    for name, client in rule_clients(spec).items():
        kinds = [
            kind for kind, present in (("principals", client.principals), ("namespaces", client.namespaces)) if present
        ]
        if kinds:
            expected.append(
                rf"nginx: client '{name}' \(used by [^)]*\) is identified by {kinds[0]}, which nginx "
                "cannot enforce"
            )
        for header, value in (client.headers or {}).items():
            if set(str(value)) - SAFE_HEADER_VALUE_CHARS:
                # Header names are case-insensitive: messages name them in lower case.
                expected.append(rf"nginx: client '{name}': header '{re.escape(header.lower())}': the value contains")
    return expected


def assert_refused_as_documented(error: TargetError, documented: list[str], spec_text: str) -> None:
    assert documented, f"unexpected refusal {error} for a spec the target should express:\n{spec_text}"
    assert any(re.search(pattern, str(error)) for pattern in documented), (str(error), documented)


# --- Istio ---------------------------------------------------------------------------------------------


ISTIO_RUNS: list[int] = []


@property_settings(100)
@given(generated=specs())
def test_istio_output_is_valid_and_agrees_with_decide(generated: GeneratedSpec) -> None:
    ISTIO_RUNS.append(1)
    loaded = generated.load()
    documented = istio_refusals(loaded.spec)
    try:
        text = istio_output(compile_policy(loaded))
    except TargetError as error:
        assert_refused_as_documented(error, documented, generated.to_yaml())
        return
    assert not documented, f"istio accepted a header value it documents as a wildcard:\n{generated.to_yaml()}"
    documents = list(yaml.safe_load_all(text))
    for document in documents:
        assert validate_istio_document(document) == [], document
        expected = [ENVOY_FILTER_WARNING] if document["kind"] == "EnvoyFilter" else []  # istiod warns about any
        assert webhook_warnings(document) == expected, document
    matrix = property_matrix(loaded.spec)
    total, mismatches = len(matrix), istio_mismatches(loaded.spec, documents, matrix)
    assert not mismatches, f"{len(mismatches)}/{total} mismatches:\n" + "\n".join(mismatches[:20])


def test_istio_property_ran_enough_examples() -> None:
    # Runs after the property (file order): the floor is a promise of the CI budget, keep it honest.
    print(f"istio property: {len(ISTIO_RUNS)} examples")
    assert len(ISTIO_RUNS) >= examples(100) or not ISTIO_RUNS  # not ISTIO_RUNS: property deselected


# --- Envoy ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def envoy_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """Test certificates, generated once per session, for the mTLS listeners of bootstraps that need them."""
    ca = TestCA(tmp_path_factory.mktemp("prop-pki"))
    server = ca.issue("envoy", server=True)
    return Tls(cert=str(server.cert), key=str(server.key), clientCA=str(ca.ca.cert))


def with_tls(loaded: LoadedSpec, tls: Tls) -> LoadedSpec:
    standalone = loaded.spec.standalone or Standalone()
    spec = loaded.spec.model_copy(update={"standalone": standalone.model_copy(update={"tls": tls})})
    return LoadedSpec(spec, loaded.source)


def served(addresses: dict[str, str], policy: Policy) -> dict[str, str]:
    """The addresses of the ports the policy's spec serves (openai only where it sets workload.ports.openai)."""
    return {port: addresses[port] for port in policy.ports.served}


def bootstrap(policy: Policy, dry_run: bool) -> str:
    return envoy_output(
        policy,
        bootstrap=True,
        listen=served(LISTEN, policy),
        upstream=served(UPSTREAM, policy),
        admin="127.0.0.1:19901",
        dry_run=dry_run,
    )


def envoy_validate_failure(config: Path) -> str | None:
    result = envoy_validate(config)
    output = result.stdout + result.stderr
    if result.returncode != 0 or "Deprecated field" in output or "deprecated" in output.lower():
        return f"{config.name}: exit {result.returncode}\n{output[-2000:]}"
    return None


@pytest.mark.envoy
def test_envoy_bootstraps_pass_envoy_validate(tmp_path_factory: pytest.TempPathFactory, envoy_tls: Tls) -> None:
    directory = tmp_path_factory.mktemp("prop-envoy")
    configs: list[Path] = []
    sources: dict[str, str] = {}

    @property_settings(100)
    @given(generated=specs(), dry_run=st.booleans())
    def generate_bootstraps(generated: GeneratedSpec, dry_run: bool) -> None:
        loaded = generated.load()
        mtls_clients = needs_mtls(loaded.spec)
        if mtls_clients:
            # Documented exit 2: a standalone Envoy checks principals/namespaces only on mutual TLS.
            with pytest.raises(TargetError, match=r"standalone\.tls") as refused:
                bootstrap(compile_policy(loaded), dry_run)
            assert any(f"client '{name}' (used by " in str(refused.value) for name in mtls_clients)
            loaded = with_tls(loaded, envoy_tls)
        config = directory / f"bootstrap-{len(configs):05d}.json"
        config.write_text(bootstrap(compile_policy(loaded), dry_run), encoding="utf-8")
        configs.append(config)
        sources[config.name] = generated.to_yaml()

    generate_bootstraps()
    # Generated first, validated after: one Envoy process per config, several at a time.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        failures = [failure for failure in pool.map(envoy_validate_failure, configs) if failure]
    print(f"envoy property: {len(configs)} bootstraps validated, {len(failures)} failures")
    assert len(configs) >= examples(100)
    assert not failures, "\n\n".join(f"{f}\nspec:\n{sources[f.split(':', 1)[0]]}" for f in failures[:5])


# --- nginx ---------------------------------------------------------------------------------------------


def nginx_t_failure(config: Path) -> str | None:
    with nginx_prefix() as prefix:
        result = nginx_test(config, prefix)
    if result.returncode != 0 or "warn" in result.stderr:
        return f"{config.name}: exit {result.returncode}\n{result.stderr[-2000:]}"
    return None


@pytest.mark.nginx
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_nginx_full_config_passes_nginx_t_or_is_refused_as_documented(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("prop-nginx")
    configs: list[Path] = []
    sources: dict[str, str] = {}
    refused: list[str] = []

    @property_settings(100)
    @given(generated=st.one_of(specs(), proxy_specs()))
    def generate_configs(generated: GeneratedSpec) -> None:
        loaded = generated.load()
        documented = nginx_refusals(loaded.spec)
        policy = compile_policy(loaded)
        try:
            text = nginx_output(
                policy,
                full=True,
                daemon=False,
                prefix=None,
                listen=served(LISTEN, policy),
                upstream=served(UPSTREAM, policy),
            )
        except TargetError as error:
            assert_refused_as_documented(error, documented, generated.to_yaml())
            refused.append(str(error))
            return
        assert not documented, f"nginx expressed a spec it documents as inexpressible:\n{generated.to_yaml()}"
        config = directory / f"nginx-{len(configs):05d}.conf"
        config.write_text(text, encoding="utf-8")
        configs.append(config)
        sources[config.name] = generated.to_yaml()

    generate_configs()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        failures = [failure for failure in pool.map(nginx_t_failure, configs) if failure]
    print(
        f"nginx property: {len(configs)} configs through nginx -t, {len(refused)} refused as documented, "
        f"{len(failures)} failures"
    )
    assert len(configs) + len(refused) >= examples(100)
    assert len(configs) >= examples(100) // 4, "too few expressible specs: the strategy drifted"
    assert not failures, "\n\n".join(f"{f}\nspec:\n{sources[f.split(':', 1)[0]]}" for f in failures[:5])


# --- real traffic ----------------------------------------------------------------------------------------


@pytest.mark.envoy
@pytest.mark.nginx
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_real_envoy_and_nginx_agree_with_decide(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Imported here: these modules are test modules (their fixtures must not leak into this one).
    from tests.test_envoy_conformance import _run_matrix as run_envoy_matrix
    from tests.test_envoy_conformance import start_spec as start_envoy
    from tests.test_nginx_conformance import run_matrix as run_nginx_matrix
    from tests.test_nginx_conformance import start_proxy as start_nginx

    ran: list[int] = []
    granted: list[int] = []  # requests decide() allows: a deny-everything proxy must not pass unnoticed

    @property_settings(20, share=20)
    @given(generated=proxy_specs())
    def run_on_real_proxies(generated: GeneratedSpec) -> None:
        loaded = generated.load()
        mismatches: list[str] = []
        with start_envoy(loaded, tmp_path_factory.mktemp("prop-real-envoy")) as running:
            total, _, found = run_envoy_matrix(running, property_matrix(running.spec, LOOPBACK_OUTSIDER_IP))
            mismatches += [f"envoy {m}" for m in found]
        with start_nginx(loaded) as proxy:
            total_nginx, found = run_nginx_matrix(proxy, property_matrix(proxy.spec, LOOPBACK_OUTSIDER_IP))
            mismatches += [f"nginx {m}" for m in found]
        ran.append(total + total_nginx)
        granted.append(
            sum(
                decide(running.spec, request, proxy.enforced).allowed
                for _, request in property_matrix(running.spec, LOOPBACK_OUTSIDER_IP)
            )
        )
        assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])

    run_on_real_proxies()
    print(f"real-traffic property: {len(ran)} specs, {sum(ran)} requests, {sum(granted)} allowed per proxy")
    assert len(ran) >= examples(20, share=20)
    assert sum(bool(count) for count in granted) >= len(granted) // 4, "too few specs grant anything"


def test_generated_specs_are_valid_and_varied() -> None:
    """The strategy itself: every draw loads, and the features the properties rely on all occur."""
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(generated=specs())
    def observe(generated: GeneratedSpec) -> None:
        spec = generated.load().spec
        document = generated.document
        seen.update(kind for client in document.get("clients", {}).values() for kind in client)
        seen.update(rule_key for rule in document.get("rules", []) for rule_key in rule)
        seen.update(f"mtls:{spec.mtls.mode}" for _ in [0])
        if any(rule.from_ == "anyone" for rule in spec.rules):
            seen.add("anyone")
        if "rules" in document and not document["rules"]:
            seen.add("empty-rules")
        if generated.environ:
            seen.add("env")
        if spec.mtls.port_overrides:
            seen.add("portOverrides")
        if any(":" in block for c in spec.clients.values() for block in c.ip_blocks or ()):
            seen.add("ipv6")
        if spec.workload.ports.openai is not None:
            seen.add("openai")
            if any(m for rule in spec.rules if "inference" in rule.categories for m in rule.models or ()):
                seen.add("openai-models")
        if any(isinstance(key, str) and key == "openai" for key in spec.mtls.port_overrides):
            seen.add("portOverrides:openai")

    observe()
    wanted = {
        "principals",
        "namespaces",
        "ipBlocks",
        "headers",
        "allow",
        "deny",
        "models",
        "grpcAllModels",
        "anyone",
        "empty-rules",
        "env",
        "portOverrides",
        "ipv6",
        "openai",
        "openai-models",
        "portOverrides:openai",
        "mtls:STRICT",
        "mtls:PERMISSIVE",
        "mtls:DISABLE",
    }
    assert wanted <= seen, wanted - seen


@pytest.mark.parametrize(("case", "openai"), [("identity-kinds", False), ("identity-kinds", True), ("per-model", True)])
def test_property_matrix_covers_every_endpoint_and_identity(case: str, openai: bool) -> None:
    """Every endpoint of every served port, for every identity; the OpenAI port only where served, its
    JSON body routes with bodies naming listed models, near misses, and unreadable ones."""
    spec = load_case(case).spec
    if openai:
        ports = spec.workload.ports.model_copy(update={"openai": 9000})
        spec = spec.model_copy(update={"workload": spec.workload.model_copy(update={"ports": ports})})
    matrix = property_matrix(spec)
    assert {label.split(" as ", 1)[1] for label, _ in matrix} == {person.label for person in identities(spec)}
    grpc_paths = {request.path for _, request in matrix if request.protocol == "grpc"}
    assert grpc_paths == {m.path for m in load_catalog().grpc} | set(EXTRA_GRPC)
    assert any(request.protocol == "openai" for _, request in matrix) == openai
    for endpoint in load_catalog().http:
        if endpoint.port == "openai" and not openai:
            continue
        assert any(
            request.protocol == endpoint.port
            and endpoint.match(tuple(request.path.split("?")[0].split("/")[1:])) is not False
            for _, request in matrix
        ), endpoint.template
    bodies = [request.body_model for _, request in matrix if isinstance(request, BodyRequest)]
    assert (len(bodies) > 0) == openai
    if openai:
        listed = {model for rule in spec.rules for model in rule.models or ()}
        assert set(bodies) - listed - {None, ""} and None in bodies
        assert bool(listed & set(bodies)) == bool(listed)
