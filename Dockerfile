# meshgen as a container image, for GitOps pipelines that run tools as images:
#   docker build -t meshgen . && docker run --rm -v "$PWD:/work:ro" meshgen istio examples/triton-access.yaml
# Checked by tests/test_dockerfile.py (always) and built by .ci/run where a container runtime is available.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshgen meshgen
COPY templates templates
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
  && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin meshgen
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["meshgen"]
CMD ["--help"]
