"""The catalogue of security-relevant mutants run by scripts/mutants.py.

Each mutant is a plausible mistake that widens (or otherwise breaks) what the output grants: an edit
of the generator's code or templates, the property it breaks, and the behavioural tests expected to
catch it (run with golden comparisons excluded). A snippet must occur exactly once in its file, so a
mutant goes stale, and the run fails, when the code it mutates changes. Extend the catalogue whenever a
target gains a feature (docs/testing.md says how).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the repository root
    find: str  # must occur exactly once in the file
    replace: str


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest selection, most likely killer first
    ci: bool = False  # in the fixed CI subset


# --- behavioural suites (no goldens): the real proxies, the Istio evaluator, decisions -------------------
ISTIO = (
    "tests/test_istio.py",
    "tests/test_istio_validation.py",
    "tests/test_properties.py::test_istio_output_is_valid_and_agrees_with_decide",
)
ENVOY = (
    "tests/test_envoy_conformance.py",
    "tests/test_envoy.py",
    "tests/test_properties.py::test_envoy_bootstraps_pass_envoy_validate",
    "tests/test_properties.py::test_real_envoy_and_nginx_agree_with_decide",
)
NGINX = (
    "tests/test_nginx_conformance.py",
    "tests/test_nginx.py",
    "tests/test_nginx_dryrun.py",
    "tests/test_properties.py::test_nginx_full_config_passes_nginx_t_or_is_refused_as_documented",
    "tests/test_properties.py::test_real_envoy_and_nginx_agree_with_decide",
)
TRITON = ("tests/test_everyday.py", "tests/e2e/test_triton_flags.py")
GRPC_BODY = ("tests/test_grpc_body.py", "tests/test_envoy_conformance.py")
CONTRACT = ("tests/test_targets.py",)
EVERY_TARGET = (*ISTIO, *ENVOY, *NGINX, *CONTRACT)

COMPILE = "meshgen/policy/compile.py"
CONTRACT_PY = "meshgen/targets/contract.py"
ISTIO_PY = "meshgen/targets/istio/policies.py"
RBAC = "meshgen/targets/envoy/rbac.py"
RENDER = "meshgen/render.py"
BOOTSTRAP = "meshgen/targets/envoy/bootstrap.py"
NGINX_CONFIG = "meshgen/targets/nginx/config.py"
NGINX_FLAGS = "meshgen/targets/nginx/flags.py"
NGINX_TEMPLATE = "templates/nginx/http.conf.j2"
GUARD = "templates/envoy/grpc_model_guard.lua.j2"
JWT_PY = "meshgen/targets/envoy/jwt.py"
TRITON_PY = "meshgen/targets/triton/flags.py"
OPENAI_PY = "meshgen/targets/envoy/openai.py"
CATALOG_YAML = "meshgen/catalog/triton.yaml"


def one(path: str, find: str, replace: str) -> tuple[Edit, ...]:
    return (Edit(path, find, replace),)


def first(test: str, suite: tuple[str, ...]) -> tuple[str, ...]:
    """The suite, with the test expected to kill the mutant soonest run first."""
    return (test, *suite)


ENVOY_CONFORMANCE = "tests/test_envoy_conformance.py::"
# JWT clients, on the case jwt-tenants only (the other cases have none). Envoy: the real proxy with the
# token corpus, placements and near misses (tests/test_jwt.py, seconds), then the case's full matrix
# (~90 s). Istio: the evaluator with the RequestAuthentication, exact verdicts on the same corpus
# (tests/test_jwt_mutants_guard.py, seconds), then the case's full matrix (allowed or not, ~20 s).
JWT_ENVOY = (
    "tests/test_jwt.py",
    ENVOY_CONFORMANCE + "test_matrix_matches_decide[jwt-tenants]",
    ENVOY_CONFORMANCE + "test_filter_output_on_container_port_listeners_matches_decide[jwt-tenants]",
)
JWT_ISTIO = (
    "tests/test_jwt_mutants_guard.py",
    "tests/test_istio.py::test_documents_pass_istio_schema_cel_and_webhook[jwt-tenants]",
    "tests/test_istio.py::test_istio_decisions_equal_the_reference[jwt-tenants]",
)

# The OpenAI frontend's port: the body corpus on the real Envoy in front of FastAPI (seconds), then the
# llm-tenants matrix on the real Envoy; Istio: the llm-tenants matrix through the evaluator.
OPENAI_ENVOY = (
    "tests/test_openai_body.py",
    ENVOY_CONFORMANCE + "test_matrix_matches_decide[llm-tenants]",
)
OPENAI_ISTIO = ("tests/test_istio.py::test_istio_decisions_equal_the_reference[llm-tenants]",)


CATALOGUE: tuple[Mutant, ...] = (
    # --- the policy compiler -------------------------------------------------------------------------
    Mutant(
        "compile-models-dropped",
        "per-model HTTP grants widened to every model",
        one(COMPILE, "HttpGrant(endpoint, models if endpoint.model_scoped else None)", "HttpGrant(endpoint, None)"),
        EVERY_TARGET,
        ci=True,
    ),
    Mutant(
        "compile-server-scoped-with-models",
        "a rule with models also grants its categories' server-scoped endpoints",
        one(COMPILE, "return models is None or endpoint.model_scoped", "return True"),
        EVERY_TARGET,
    ),
    Mutant(
        "compile-grpc-all-models-always",
        "per-model allow rules grant model-scoped gRPC for every model",
        one(COMPILE, "elif rule.grpc_all_models:", "elif True:"),
        EVERY_TARGET,
    ),
    Mutant(
        "compile-allow-from-anyone",
        "allow rules apply to anyone, not to their clients",
        one(COMPILE, 'who = None if rule.from_ == "anyone" else', 'who = None if rule.action == "allow" else'),
        EVERY_TARGET,
        ci=True,
    ),
    Mutant(
        "compile-deny-becomes-allow",
        "deny rules become allow rules",
        one(COMPILE, "PolicyRule(index, rule.action, who,", 'PolicyRule(index, "allow", who,'),
        EVERY_TARGET,
    ),
    Mutant(
        "compile-ip-kind-dropped",
        "a client's ipBlocks are dropped (clients with more kinds match on fewer)",
        one(COMPILE, "        kinds.append(IpBlocks(tuple(client.ip_blocks)))", "        pass"),
        EVERY_TARGET,
    ),
    Mutant(
        "compile-namespace-kind-dropped",
        "a client's namespaces are dropped",
        one(COMPILE, "        kinds.append(Namespaces(tuple(client.namespaces)))", "        pass"),
        EVERY_TARGET,
    ),
    Mutant(
        "compile-header-names-not-lowered",
        "header names keep the spec's case",
        one(COMPILE, "Header(header.lower(), ", "Header(header, "),
        (*NGINX, *ISTIO, *ENVOY),
    ),
    # --- the capability contract ---------------------------------------------------------------------
    Mutant(
        "contract-withheld-allow-widened",
        "an allow grant a target cannot narrow is widened to every model instead of withheld",
        one(CONTRACT_PY, 'elif rule.action == "deny":', "elif True:"),
        EVERY_TARGET,
        ci=True,
    ),
    Mutant(
        "contract-withheld-deny-dropped",
        "a deny a target cannot narrow is dropped instead of applying to every model",
        one(
            CONTRACT_PY, "            if widened not in kept:\n                kept.append(widened)", "            pass"
        ),
        EVERY_TARGET,
        ci=True,
    ),
    Mutant(
        "contract-refusal-skipped",
        "identity kinds a target cannot check are skipped instead of refused",
        (
            Edit(
                CONTRACT_PY,
                "            if isinstance(support, Refused | Withheld):\n                raise _client_refusal(",
                "            if False:\n                raise _client_refusal(",
            ),
            Edit(
                CONTRACT_PY,
                'raise AssertionError(f"{target} enforces {kind.feature.value} but has no encoder for it")',
                "continue",
            ),
        ),
        (*CONTRACT, *NGINX, *ENVOY),
    ),
    # --- Istio -----------------------------------------------------------------------------------------
    Mutant(
        "istio-deny-policy-allows",
        "the DENY policy is emitted with action ALLOW",
        one(
            ISTIO_PY,
            '"name": f"{policy.name}-deny",\n                "action": "DENY",',
            '"name": f"{policy.name}-deny",\n                "action": "ALLOW",',
        ),
        ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-ports-dropped",
        "operations are not pinned to their container port",
        one(ISTIO_PY, '{"ports": [port], "methods": list(methods)', '{"methods": list(methods)'),
        ISTIO,
    ),
    Mutant(
        "istio-grpc-on-http-port",
        "gRPC grants are pinned to the HTTP port",
        one(
            ISTIO_PY,
            'grouped[(str(policy.port("grpc")), (GRPC_METHOD,), ())]',
            'grouped[(str(policy.port("http")), (GRPC_METHOD,), ())]',
        ),
        ISTIO,
    ),
    Mutant(
        "istio-stats-exclusion-dropped",
        "the metadata template also grants /v2/models/stats",
        one(ISTIO_PY, 'operation["notPaths"] = list(excluded)', "pass"),
        ISTIO,
    ),
    Mutant(
        "istio-header-conditions-dropped",
        "header-identified clients lose their request.headers conditions",
        one(ISTIO_PY, 'when += [{"key": key, "values": list(values)} for key, values in match.when]', "pass"),
        ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-ip-blocks-dropped",
        "a client's ipBlocks are not written into its source",
        one(
            ISTIO_PY,
            'IpBlocks: lambda kind, client: IstioMatch(source=(("ipBlocks", kind.blocks),)),',
            "IpBlocks: lambda kind, client: IstioMatch(),",
        ),
        ISTIO,
    ),
    Mutant(
        "istio-always-dry-run",
        "every policy is annotated dry-run (nothing enforced)",
        one(ISTIO_PY, "annotations = dict(DRY_RUN) if dry_run else {}", "annotations = dict(DRY_RUN)"),
        ISTIO,
    ),
    Mutant(
        "istio-peer-authentication-permissive",
        "PeerAuthentication ignores the spec's mode",
        one(ISTIO_PY, '"mode": mode_of.get(policy.mtls_mode, policy.mtls_mode),', '"mode": "PERMISSIVE",'),
        first("tests/test_istio.py::test_peer_authentication_enforces_the_specs_mode_on_every_port", ISTIO),
        ci=True,
    ),
    # --- Envoy -----------------------------------------------------------------------------------------
    Mutant(
        "envoy-method-prefix",
        ":method matched by prefix (GETX, POSTS pass)",
        one(RBAC, '_header(":method", {"exact": m})', '_header(":method", {"prefix": m})'),
        ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-destination-port-off-by-one",
        "filter-only grants pinned to the wrong destination port",
        one(RBAC, '{"exact": str(port_number)}', '{"exact": str(port_number + 1)}'),
        ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-grpc-on-every-listener",
        "gRPC grants also on the HTTP and metrics listeners",
        one(RBAC, 'if rule.grpc and port in (None, "grpc"):', "if rule.grpc:"),
        first(ENVOY_CONFORMANCE + "test_matrix_matches_decide", ENVOY),
        ci=True,
    ),
    Mutant(
        "envoy-ports-not-separated",
        "a listener also carries the other ports' HTTP grants",
        one(RBAC, "if port is not None and grant.endpoint.port != port:", "if False:"),
        first(ENVOY_CONFORMANCE + "test_matrix_matches_decide", ENVOY),
    ),
    Mutant(
        "envoy-deny-entries-dropped",
        "the deny entries are not emitted",
        one(RBAC, "[_filter(policy.name, [*deny, *allow],", "[_filter(policy.name, [*allow],"),
        ENVOY,
    ),
    Mutant(
        "envoy-allow-entries-first",
        "allow entries come before deny entries in the first-match list: an allow beats a deny",
        one(RBAC, "[_filter(policy.name, [*deny, *allow],", "[_filter(policy.name, [*allow, *deny],"),
        ENVOY,
    ),
    Mutant(
        "envoy-default-allow",
        "the ALLOW filter allows what no entry matched",
        one(RBAC, '_action(DEFAULT_DENY, "DENY")', '_action(DEFAULT_DENY, "ALLOW")'),
        ENVOY,
    ),
    Mutant(
        "envoy-literal-path-prefix",
        "a literal path also matches longer paths (prefix without '?')",
        one(RBAC, '_path({"prefix": path + "?"})', '_path({"prefix": path})'),
        ENVOY,
    ),
    Mutant(
        "envoy-segment-crosses-slash",
        "a path variable matches across '/'",
        one(RBAC, 'SEGMENT = "[^/?]+"', 'SEGMENT = "[^?]+"'),
        ENVOY,
    ),
    Mutant(
        "envoy-query-unanchored",
        "anything may follow a templated path",
        one(RBAC, 'QUERY = r"(?:\\?.*)?"', 'QUERY = r".*"'),
        ENVOY,
    ),
    Mutant(
        "envoy-model-key-prefix",
        "a per-model key matches longer model names (simple -> simplex)",
        one(RBAC, '(prefix + model + "/" for model in models),', "(prefix + model for model in models),"),
        ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-per-model-identity-dropped",
        "per-model grants lose their client identity (AND -> OR)",
        one(
            RBAC,
            "yield kind.map_field, tuple(trie.keys), _all([*self._guarded(prefix), *identity, gate])",
            "yield kind.map_field, tuple(trie.keys), _all([*self._guarded(prefix), gate])",
        ),
        ENVOY,
    ),
    Mutant(
        "envoy-trie-merged-across-methods-by-form-only",
        "tries of one client merge by key form alone and lose their model keys (per-model grants denied)",
        one(
            RBAC,
            "tries.setdefault((map_field, keys), []).append(predicate)",
            "tries.setdefault((map_field, ()), []).append(predicate)",
        ),
        ENVOY,
    ),
    Mutant(
        "render-yaml11-booleans-plain",
        "the fast YAML emitter writes y/n/on/off plain: yaml-cpp and go-yaml read a header value 'n' as false",
        one(
            RENDER, "        and value.lower() not in _YAML11_BOOLEANS\n        and _RESOLVER", "        and _RESOLVER"
        ),
        ("tests/test_render.py", "tests/test_targets.py"),
    ),
    Mutant(
        "envoy-stats-exclusion-dropped",
        "the metadata template also grants /v2/models/stats",
        one(RBAC, "            if self.excluded:", "            if False:"),
        ENVOY,
    ),
    Mutant(
        "envoy-principal-prefix",
        "principals matched by prefix",
        one(RBAC, '{"exact": SPIFFE + p}', '{"prefix": SPIFFE + p}'),
        ENVOY,
    ),
    Mutant(
        "envoy-namespace-regex-loose",
        "namespaces matched as a prefix of the namespace segment",
        one(RBAC, '/ns/{re.escape(ns)}/sa/[^/]+")', '/ns/{re.escape(ns)}.*")'),
        ENVOY,
    ),
    Mutant(
        "envoy-header-value-prefix",
        "header values matched by prefix",
        one(
            RBAC,
            '_header(header.name, {"exact": header.value.value})',
            '_header(header.name, {"prefix": header.value.value})',
        ),
        ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-source-ip-from-xff",
        "ipBlocks matched on the X-Forwarded-For address",
        (
            Edit(
                RBAC,
                'SOURCE_IP_INPUT = "envoy.matching.inputs.direct_source_ip"',
                'SOURCE_IP_INPUT = "envoy.matching.inputs.source_ip"',
            ),
            Edit(
                RBAC,
                '"type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DirectSourceIPInput"',
                '"type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput"',
            ),
            Edit(BOOTSTRAP, '"use_remote_address": True,', '"use_remote_address": True, "xff_num_trusted_hops": 1,'),
        ),
        ENVOY,
    ),
    Mutant(
        "envoy-merge-slashes-off",
        "'//' is not merged before deciding (decided apart from its canonical form)",
        one(BOOTSTRAP, '"merge_slashes": True,', '"merge_slashes": False,'),
        first(ENVOY_CONFORMANCE + "test_non_canonical_paths_are_decided_on_their_canonical_form", ENVOY),
        ci=True,
    ),
    Mutant(
        "envoy-escaped-slashes-forwarded",
        "%2F is unescaped and forwarded instead of refused",
        one(
            BOOTSTRAP,
            '"path_with_escaped_slashes_action": "REJECT_REQUEST",',
            '"path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",',
        ),
        ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-normalize-path-off",
        "dot segments and escapes reach RBAC unnormalized",
        one(BOOTSTRAP, '"normalize_path": True,', '"normalize_path": False,'),
        first(ENVOY_CONFORMANCE + "test_bypass_probes_never_reach_denied_endpoints", ENVOY),
    ),
    Mutant(
        "envoy-client-certificate-optional",
        "the mTLS listener accepts clients without a certificate",
        one(BOOTSTRAP, '"require_client_certificate": True,', '"require_client_certificate": False,'),
        first(ENVOY_CONFORMANCE + "test_mtls_listeners_refuse_clients_without_a_certificate", ENVOY),
        ci=True,
    ),
    # --- the gRPC model guard (Envoy and Istio) and what reads its metadata ------------------------------
    Mutant(
        "guard-name-field-other-wire-type-ignored",
        "the name field with another wire type is skipped, as grpc_field_extraction does (the measured bypass)",
        one(GUARD, '    if number == field and wire ~= 2 then\n      return nil, "name-wire-type"\n    end\n', ""),
        GRPC_BODY,
        ci=True,
    ),
    Mutant(
        "guard-last-name-wins",
        "a repeated name field is accepted (the last one kept) instead of refused",
        one(GUARD, "        if named then", "        if false then"),
        GRPC_BODY,
    ),
    Mutant(
        "guard-compressed-accepted",
        "a compressed message is scanned as if it were plain",
        one(GUARD, "  if prefix:byte(1) ~= 0 then", "  if false then"),
        GRPC_BODY,
    ),
    Mutant(
        "guard-second-message-accepted",
        "a unary call carrying two messages is read from the first only",
        one(GUARD, "  if size > 5 + length then", "  if false then"),
        GRPC_BODY,
    ),
    Mutant(
        "guard-non-minimal-varints",
        "non-minimal tags and lengths are accepted (5-byte tags alias field 1 in protobuf)",
        one(GUARD, "      if k > 0 and byte == 0 then\n        return nil\n      end\n", ""),
        GRPC_BODY,
    ),
    Mutant(
        "guard-limit-doubled",
        "messages up to twice the inspection limit are read",
        one(GUARD, "  if length > LIMIT then", "  if length > 2 * LIMIT then"),
        GRPC_BODY,
    ),
    Mutant(
        "guard-name-alphabet-unchecked",
        "a name outside the model-name alphabet is taken as proven",
        one(GUARD, '  if name:find("[^A-Za-z0-9_.%-]") then', "  if false then"),
        GRPC_BODY,
    ),
    Mutant(
        "rbac-model-gate-dropped",
        "the model header is trusted without the guard's metadata (a client can forge it)",
        one(
            RBAC,
            '[{"predicate": _all([*call, _metadata_present(MODEL_KEY)]), "on_match": {"matcher": lookup}}]',
            '[{"predicate": _all(call), "on_match": {"matcher": lookup}}]',
        ),
        first(ENVOY_CONFORMANCE + "test_without_the_guard_per_model_grpc_fails_closed", GRPC_BODY),
        ci=True,
    ),
    Mutant(
        "rbac-deny-ignores-unproven",
        "a deny limited to models does not apply when the guard cannot prove the model",
        one(
            RBAC,
            '{"predicate": _all([*call, _metadata_present(UNPROVEN_KEY)]), "on_match": on_match}',
            '{"predicate": _all([*call, {"not_matcher": _metadata_present(INSPECTED_KEY)}]), "on_match": on_match}',
        ),
        GRPC_BODY,
        ci=True,
    ),
    Mutant(
        "rbac-deny-ignores-missing-guard",
        "a deny limited to models does not apply when the guard did not run",
        one(RBAC, '        entries.append({"predicate": _all([*call, guard_missing]), "on_match": on_match})\n', ""),
        first(ENVOY_CONFORMANCE + "test_without_the_guard_per_model_grpc_fails_closed", GRPC_BODY),
    ),
    Mutant(
        "classifier-skips-deny-rules",
        "the guard is skipped for callers whose only per-model rule is a deny",
        one(RBAC, "    if deny_limited is not None:\n        depends.append(deny_limited)\n", ""),
        GRPC_BODY,
    ),
    Mutant(
        "istio-model-condition-dropped",
        "per-model gRPC rules on Istio lose their model condition",
        one(
            ISTIO_PY,
            "result.append(_istio_rule(sources, [operation], [*conditions, _model_in(models)]))",
            "result.append(_istio_rule(sources, [operation], conditions))",
        ),
        ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-deny-ignores-unproven",
        "Istio denies limited to models do not apply to unproven models",
        one(
            ISTIO_PY,
            "result.append(_istio_rule(sources, [operation], [*conditions, _guard_says(UNPROVEN_KEY)]))",
            "pass",
        ),
        ISTIO,
    ),
    Mutant(
        "istio-guard-on-http-port",
        "the EnvoyFilter inserts the guard on the HTTP port's chain",
        one(ISTIO_PY, '"port": policy.port("grpc"),', '"port": policy.port("http"),'),
        ISTIO,
    ),
    # --- JWT clients (Envoy: jwt_authn + RBAC on its payload; Istio: RequestAuthentication + policies) ---
    Mutant(
        "envoy-jwt-unread-authorization-passed",
        "an Authorization header jwt_authn did not read (bearer, Basic) reaches Triton on anyone's endpoints",
        one(
            RBAC,
            '        deny.insert(0, {"predicate": unread, "on_match": _action(UNREAD_AUTHORIZATION, "DENY")})\n',
            "",
        ),
        JWT_ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-jwt-failed-token-allowed",
        "a token that fails verification goes on anonymous (allow_missing_or_failed) instead of 401",
        one(JWT_PY, 'else {"allow_missing": {}}', 'else {"allow_missing_or_failed": {}}'),
        JWT_ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-jwt-after-rbac",
        "jwt_authn runs after the RBAC filters (they see no payload; failures are not refused first)",
        one(
            RBAC,
            "return [*([tokens] if tokens else []), *guard, *rbac_filters(policy, port=port, dry_run=dry_run)]",
            "return [*guard, *rbac_filters(policy, port=port, dry_run=dry_run), *([tokens] if tokens else [])]",
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-subject-dropped",
        "a JWT client with a subject matches every account of its issuer",
        one(
            RBAC,
            'predicates = [_payload(("iss",), _exactly(kind.issuer)), _payload(("sub",), subject)]',
            'predicates = [_payload(("iss",), _exactly(kind.issuer))]',
        ),
        JWT_ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-jwt-issuer-dropped",
        "a JWT client matches a token of any trusted issuer with its subject",
        one(
            RBAC,
            'predicates = [_payload(("iss",), _exactly(kind.issuer)), _payload(("sub",), subject)]',
            'predicates = [_payload(("sub",), subject)]',
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-empty-subject",
        "a token with an empty subject is taken for an account of the issuer",
        one(
            RBAC,
            'any_subject = {"string_match": {"safe_regex": {"regex": ".+"}}}',
            'any_subject = {"string_match": {"safe_regex": {"regex": ".*"}}}',
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-audience-predicate-dropped",
        "a JWT client takes a token for another audience its issuer accepts (a sibling client's)",
        one(RBAC, 'predicates.append(_payload(("aud",), _holds(kind.audiences)))', "pass"),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-list-claims-unmatched",
        "a claim or audience given as a list never matches (string claims only)",
        one(
            RBAC,
            'for m in ({"list_match": {"one_of": _exactly(value)}}, _exactly(value))]',
            "for m in (_exactly(value),)]",
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-string-claims-unmatched",
        "a claim or audience given as a string never matches (list claims only)",
        one(
            RBAC,
            'for m in ({"list_match": {"one_of": _exactly(value)}}, _exactly(value))]',
            'for m in ({"list_match": {"one_of": _exactly(value)}},)]',
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-provider-audiences-dropped",
        "jwt_authn verifies a token for any audience (the issuer's audiences are not set)",
        one(JWT_PY, '            config["audiences"] = list(provider.audiences)', "            pass"),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-token-forwarded",
        "a verified token is forwarded to Triton (jwt_authn forward: true)",
        one(JWT_PY, '"payload_in_metadata": PAYLOAD_KEY,', '"payload_in_metadata": PAYLOAD_KEY, "forward": True,'),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-bearer-prefix-dropped",
        "the whole Authorization value is read as the token (no 'Bearer ' prefix)",
        one(
            JWT_PY,
            '"from_headers": [{"name": AUTHORIZATION, "value_prefix": BEARER}],',
            '"from_headers": [{"name": AUTHORIZATION}],',
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-clock-skew-widened",
        "expired tokens are accepted for ten minutes (clock_skew_seconds 600, not Envoy's 60)",
        one(
            JWT_PY,
            '"failed_status_in_metadata": FAILURE_KEY,',
            '"failed_status_in_metadata": FAILURE_KEY, "clock_skew_seconds": 600,',
        ),
        JWT_ENVOY,
    ),
    Mutant(
        "envoy-jwt-audience-401-dropped",
        "a token outside its issuer's audiences is answered 403 by the bootstrap, not 401",
        one(BOOTSTRAP, "        mappers = _token_mappers(policy)", "        mappers = []"),
        first("tests/test_jwt.py::test_every_token_and_placement_is_decided_as_decide_says", JWT_ENVOY),
    ),
    Mutant(
        "compile-jwt-audiences-unrestricted",
        "an issuer's provider takes tokens for any audience although each of its clients lists audiences",
        one(
            COMPILE,
            "audiences = None if None in lists else tuple(sorted({a for wanted in lists for a in wanted or ()}))",
            "audiences = None",
        ),
        (*JWT_ENVOY, *JWT_ISTIO),
    ),
    Mutant(
        "compile-jwt-audiences-first-client-only",
        "an issuer's provider takes only its first client's audiences, not the union (others' tokens fail)",
        one(
            COMPILE,
            "audiences = None if None in lists else tuple(sorted({a for wanted in lists for a in wanted or ()}))",
            "audiences = None if None in lists else tuple(lists[0] or ())",
        ),
        (*JWT_ENVOY, *JWT_ISTIO),
    ),
    Mutant(
        "istio-jwt-unread-authorization-passed",
        "an Authorization header Istio did not read as a token reaches Triton on anyone's endpoints",
        one(ISTIO_PY, "        deny_rules.insert(0, UNREAD_AUTHORIZATION_RULE)\n", ""),
        JWT_ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-jwt-subject-loosened",
        "requestPrincipals <iss>/<sub> loosened to <iss>/* (every account of the issuer)",
        one(ISTIO_PY, "            subject = kind.subject\n", "            pass\n"),
        JWT_ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-jwt-slash-subject-unchecked",
        "a subject holding '/' is not matched (its claims[sub] condition is dropped)",
        one(ISTIO_PY, '            when.append(("request.auth.claims[sub]", (kind.subject,)))', "            pass"),
        JWT_ISTIO,
    ),
    Mutant(
        "istio-jwt-audience-condition-dropped",
        "a JWT client takes a token for another audience its issuer accepts (a sibling client's)",
        one(
            ISTIO_PY,
            'when.append(("request.auth.audiences", tuple(_exact("jwt.audiences", a) for a in kind.audiences)))',
            "pass",
        ),
        JWT_ISTIO,
    ),
    Mutant(
        "istio-jwt-claims-dropped",
        "a JWT client's claims conditions are dropped",
        one(
            ISTIO_PY,
            'when.append((f"request.auth.claims[{claim.name}]", (_exact(f"jwt.claims.{claim.name}", claim.value),)))',
            "pass",
        ),
        JWT_ISTIO,
    ),
    Mutant(
        "istio-jwt-provider-audiences-dropped",
        "the RequestAuthentication verifies a token for any audience",
        one(ISTIO_PY, '            jwt_rule["audiences"] = list(provider.audiences)', "            pass"),
        JWT_ISTIO,
    ),
    Mutant(
        "istio-jwt-token-forwarded",
        "a verified token is forwarded to Triton (forwardOriginalToken: true)",
        one(
            ISTIO_PY,
            '"fromHeaders": [dict(TOKEN_HEADER)]}',
            '"fromHeaders": [dict(TOKEN_HEADER)], "forwardOriginalToken": True}',
        ),
        JWT_ISTIO,
    ),
    Mutant(
        "istio-jwt-bearer-prefix-dropped",
        "the whole Authorization value is read as the token (no 'Bearer ' prefix)",
        one(
            ISTIO_PY,
            'TOKEN_HEADER = {"name": "Authorization", "prefix": "Bearer "}',
            'TOKEN_HEADER = {"name": "Authorization"}',
        ),
        JWT_ISTIO,
    ),
    # --- NGINX -----------------------------------------------------------------------------------------
    Mutant(
        "nginx-method-anchor",
        "the method map regex loses its \\z anchor (POSTS, GETX pass)",
        one(NGINX_CONFIG, '(f"~^{regex_literal(m)}\\\\z", "1")', '(f"~^{regex_literal(m)}", "1")'),
        NGINX,
        ci=True,
    ),
    Mutant(
        "nginx-header-anchor",
        "header values matched by prefix",
        one(
            NGINX_FLAGS,
            '(f"~^{regex_literal(definition.value)}\\\\z", "1")',
            '(f"~^{regex_literal(definition.value)}", "1")',
        ),
        NGINX,
        ci=True,
    ),
    Mutant(
        "nginx-header-case-insensitive",
        "header values matched case-insensitively",
        one(
            NGINX_FLAGS,
            '(f"~^{regex_literal(definition.value)}\\\\z", "1")',
            '(f"~*^{regex_literal(definition.value)}\\\\z", "1")',
        ),
        NGINX,
    ),
    Mutant(
        "nginx-spelling-guard",
        "a model name's case is not checked (Resnet50 for resnet50)",
        one(NGINX_FLAGS, 'SPELLING_GUARD = r"~^([^/]+)/(?:[^/]+/)*\\1(?:/|\\z)"', 'SPELLING_GUARD = r"~."'),
        NGINX,
    ),
    Mutant(
        "nginx-client-kinds-or",
        "a client matches when any of its identity kinds does (AND -> OR)",
        one(NGINX_FLAGS, '[("default", "0"), ("1" * len(parts), "1")],', '[("default", "0"), ("~1", "1")],'),
        NGINX,
        ci=True,
    ),
    Mutant(
        "nginx-rule-models-or",
        "a per-model rule holds for its clients OR its models (AND -> OR)",
        one(NGINX_FLAGS, '[("default", "0"), ("11", "1")],', '[("default", "0"), ("~1", "1")],'),
        NGINX,
    ),
    Mutant(
        "nginx-deny-checks-dropped",
        "deny rules are not checked in locations",
        one(
            NGINX_CONFIG,
            "checks = [method, *(Check(step.flag.name) for step in deny if step.flag is not None)]",
            "checks = [method]",
        ),
        NGINX,
    ),
    Mutant(
        "nginx-allow-check-dropped",
        "locations forward without checking an allow rule matched",
        one(NGINX_CONFIG, '        checks.append(Check(flag.name, "=", "0"))', "        pass"),
        NGINX,
    ),
    Mutant(
        "nginx-regex-location-unanchored",
        "templated locations match longer paths",
        one(NGINX_CONFIG, 'path = "^/" + "/".join(parts) + "\\\\z"', 'path = "^/" + "/".join(parts)'),
        NGINX,
    ),
    Mutant(
        "nginx-raw-path-guard-dropped",
        "the raw URI is no longer compared with the normalized one (HTTP)",
        one(NGINX_TEMPLATE, 'if ($request_uri != "$uri$is_args$args") {', 'if ($request_uri = "-never-") {'),
        NGINX,
        ci=True,
    ),
    Mutant(
        "nginx-grpc-raw-path-guard-dropped",
        "the raw URI is no longer compared with the normalized one (gRPC)",
        one(NGINX_TEMPLATE, "    if ($request_uri != $uri) {", '    if ($request_uri = "-never-") {'),
        NGINX,
    ),
    Mutant(
        "nginx-underscores-in-headers",
        "x_triton_admin is taken for x-triton-admin",
        one(NGINX_TEMPLATE, "    underscores_in_headers off;", "    underscores_in_headers on;"),
        NGINX,
    ),
    Mutant(
        "nginx-geo-from-xff",
        "ipBlocks matched on X-Forwarded-For",
        one(
            NGINX_TEMPLATE,
            "geo $remote_addr {{ geo.variable | nginx_var }} {",
            "geo $http_x_forwarded_for {{ geo.variable | nginx_var }} {",
        ),
        NGINX,
    ),
    # --- the OpenAI frontend's port (model in the JSON body) -------------------------------------------
    Mutant(
        "envoy-openai-unproven-not-denied",
        "a deny limited to models lets an unreadable body (other content-type, no string model) through",
        one(
            RBAC,
            "    if deny:\n        unproven = {",
            "    if False:\n        unproven = {",
        ),
        OPENAI_ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-openai-any-model",
        "an allow limited to models matches any model the body names",
        one(RBAC, "_json_model(_one_of(models))", '_json_model({"present_match": True})'),
        OPENAI_ENVOY,
        ci=True,
    ),
    Mutant(
        "envoy-openai-reader-dropped",
        "no JSON body reader: per-model grants never match, per-model denies always do",
        one(RBAC, 'if port in (None, "openai") and body_limited(policy):', "if False:"),
        OPENAI_ENVOY,
    ),
    Mutant(
        "envoy-openai-content-types-widened",
        "bodies without a content-type are read (FastAPI would too, but the reference says unproven)",
        one(
            OPENAI_PY,
            '"request_rules": {"rules": [rule], "allow_content_types": list(CONTENT_TYPES)},',
            '"request_rules": {"rules": [rule], "allow_content_types": list(CONTENT_TYPES), '
            '"allow_empty_content_type": True},',
        ),
        OPENAI_ENVOY,
    ),
    Mutant(
        "catalog-openai-chat-not-body-model",
        "chat completions no longer limited by the body's model (grants and denies lose the route)",
        one(
            CATALOG_YAML,
            "{methods: [POST], path: /v1/chat/completions, port: openai, body_model: true}",
            "{methods: [POST], path: /v1/chat/completions, port: openai}",
        ),
        OPENAI_ENVOY,
    ),
    Mutant(
        "istio-openai-unproven-not-denied",
        "Istio: a deny limited to models lets an unreadable body through",
        one(
            ISTIO_PY,
            "[*conditions, _json_model_unproven()]",
            "[*conditions, _json_model_in(models)]",
        ),
        OPENAI_ISTIO,
        ci=True,
    ),
    Mutant(
        "istio-openai-any-model",
        "Istio: an allow limited to models matches any model the body names",
        one(ISTIO_PY, "[*conditions, _json_model_in(models)]", '[*conditions, {"key": _json_key(), "values": ["*"]}]'),
        OPENAI_ISTIO,
    ),
    # --- Triton flags ------------------------------------------------------------------------------------
    Mutant(
        "triton-restricted-apis-dropped",
        "no restricted-API flags (no defence in depth)",
        one(TRITON_PY, "    yield from _restricted_apis(policy)\n", ""),
        TRITON,
    ),
    Mutant(
        "triton-grpc-never-disabled",
        "gRPC stays enabled when nothing grants it",
        one(TRITON_PY, "    if not any(rule.grpc for rule in allow):", "    if False:"),
        TRITON,
    ),
)
