"""Package-wide defaults that are not part of a model's spec.

Model and sampler defaults live in each model's TOML spec (``bayes_soil/models/<name>.toml``);
this module holds only what every command shares.
"""

from __future__ import annotations

#: The default random seed: sampler (``fit``, ``report``), simulator (``simulate``) and the
#: bundled demo dataset (made by the simulator with this seed).
DEFAULT_SEED = 20261125
