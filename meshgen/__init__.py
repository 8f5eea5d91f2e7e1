"""meshgen: compile a Triton Inference Server access spec into proxy and mesh policies."""

__version__ = "0.1.0"
