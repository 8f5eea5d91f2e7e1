"""One compile measurement in a fresh process: ``python compile_worker.py SPEC TARGET`` prints JSON.

TARGET: an output of ``meshgen all`` without its extension (istio, envoy-rbac, envoy-bootstrap, nginx).
Time covers load + compile + generate, as the CLI does.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    spec_path, target_name = Path(sys.argv[1]), sys.argv[2]
    gc.disable()  # as meshgen.cli.main does: the time is the CLI's
    start = time.perf_counter()
    from meshgen.errors import TargetError
    from meshgen.policy import compile_policy
    from meshgen.spec import load_spec
    from meshgen.targets.registry import TARGETS

    # TARGET is an output of `meshgen all` without its extension: istio, envoy-rbac, envoy-bootstrap, nginx.
    outputs = {output.name.rsplit(".", 1)[0]: (target, output) for target in TARGETS for output in target.outputs}
    if target_name not in outputs:
        raise SystemExit(f"unknown target output {target_name}; one of {', '.join(outputs)}")
    target, output = outputs[target_name]
    policy = compile_policy(load_spec(str(spec_path)))
    text = ""
    error = None
    try:
        text = target.generate(policy, output.options).text
    except TargetError as exc:
        error = exc.message
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "bytes": len(text.encode()), "rss_mb": rss_mb, "error": error}))


if __name__ == "__main__":
    main()
