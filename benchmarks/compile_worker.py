"""One compile measurement in a fresh process: ``python compile_worker.py SPEC TARGET`` prints JSON.

TARGET: istio | envoy | envoy-bootstrap | nginx. Time covers load + compile + generate, as the CLI does.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    spec_path, target = Path(sys.argv[1]), sys.argv[2]
    gc.disable()  # as meshgen.cli.main does: the time is the CLI's
    start = time.perf_counter()
    from meshgen.errors import TargetError
    from meshgen.policy import compile_policy
    from meshgen.spec import load_spec
    from meshgen.targets import envoy, istio, nginx

    policy = compile_policy(load_spec(str(spec_path)))
    text = ""
    error = None
    try:
        if target == "istio":
            text = istio.generate(policy)
        elif target == "envoy":
            text = envoy.generate(policy)
        elif target == "envoy-bootstrap":
            text = envoy.generate(policy, bootstrap=True)
        elif target == "nginx":
            text = nginx.generate(policy, full=False, listen_overrides={}, upstream_overrides={}, prefix=None,
                                  daemon=True, dry_run=False)
        else:
            raise SystemExit(f"unknown target {target}")
    except TargetError as exc:
        error = exc.message
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "bytes": len(text.encode()), "rss_mb": rss_mb, "error": error}))


if __name__ == "__main__":
    main()
