"""A tiny Python-backend model repository: ``add`` and ``identity`` (granted by the e2e specs) and
``hidden`` (granted to nobody over HTTP), each answering in well under a millisecond."""

from __future__ import annotations

from pathlib import Path

MODELS = ("add", "identity", "hidden")

_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [
{inputs}
]
output [
  {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

_INPUT = '  {{ name: "{name}" data_type: TYPE_INT32 dims: [ -1 ] }}'

# OUTPUT0 = INPUT0 + INPUT1 (add), INPUT0 (identity), -INPUT0 (hidden): a distinct result per model,
# so a response can only have come from the model the test asked for.
_MODEL_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            first = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            {body}
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", result.astype(np.int32))]))
        return responses
"""

_BODIES = {
    "add": 'result = first + pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()',
    "identity": "result = first",
    "hidden": "result = -first",
}


def input_names(model: str) -> tuple[str, ...]:
    return ("INPUT0", "INPUT1") if model == "add" else ("INPUT0",)


def write_model_repository(directory: Path) -> Path:
    for model in MODELS:
        version = directory / model / "1"
        version.mkdir(parents=True, exist_ok=True)
        inputs = ",\n".join(_INPUT.format(name=name) for name in input_names(model))
        (directory / model / "config.pbtxt").write_text(_CONFIG.format(name=model, inputs=inputs), encoding="utf-8")
        (version / "model.py").write_text(_MODEL_PY.format(body=_BODIES[model]), encoding="utf-8")
    return directory
