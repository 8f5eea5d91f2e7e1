"""Stage 1: load and validate the deployment spec."""

from meshgen.spec.loader import LoadedSpec, load_spec, load_spec_text
from meshgen.spec.model import Client, Rule, Spec

__all__ = ["Client", "LoadedSpec", "Rule", "Spec", "load_spec", "load_spec_text"]
