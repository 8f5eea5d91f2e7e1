"""Large specs still give an nginx.conf that nginx accepts without warnings (hash sizes, name lengths)."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.specs import make_spec
from meshgen.policy import compile_policy
from meshgen.spec import load_spec_text
from tests.support.nginx_process import NGINX, nginx_prefix, nginx_test_text
from tests.support.targets import nginx_output

pytestmark = [pytest.mark.nginx, pytest.mark.skipif(NGINX is None, reason="nginx is not installed")]


@pytest.mark.parametrize(("models", "clients"), [(10, 10), (10, 100), (1000, 100)])
def test_large_configs_pass_nginx_t_without_warnings(models: int, clients: int) -> None:
    loaded = load_spec_text(yaml.safe_dump(make_spec(models, clients, mtls=False)), "scale.yaml", {})
    text = nginx_output(
        compile_policy(loaded), full=True, listen={}, upstream={}, prefix=None, daemon=False, dry_run=False
    )
    with nginx_prefix() as prefix:
        result = nginx_test_text(text, prefix)
    assert result.returncode == 0 and "[warn]" not in result.stderr, result.stderr
