"""Test-wide settings: JAX's persistent compilation cache, float64, hypothesis profiles, Triton's interpreter.

Only configures JAX if it is installed, so that torch-only installs can test too.
"""

from __future__ import annotations

import importlib.util
import os

from hypothesis import HealthCheck, settings

# Triton reads TRITON_INTERPRET once, when it is first imported, and any test module of a worker may import it
# first (torch.compile does): set it before all of them, so that tt_torch._triton's tests run interpreted.
os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile(
    "default", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The training CLIs that tests call would otherwise change malloc for the whole test process (experiments.memory).
os.environ.setdefault("TT_RETAIN_MEMORY", "0")

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 exactness checks; layers still default to float32
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/tt_layers/jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
