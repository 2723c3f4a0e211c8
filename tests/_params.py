"""Params for tests, built from the code defaults of ``fakeproof/config.py``, never read from the
workspace's ``params.yaml``: a user's ``dvc exp run -S adv.eps=2/255`` rewrites that file, and a
test that read it would then check the user's experiment instead of the code.
"""

from __future__ import annotations

import copy
from typing import Any

from fakeproof.config import default_params


def default_params_raw(**sections: dict) -> dict:
    """Every section of ``params.yaml`` filled with the code defaults, as a plain YAML-ready mapping,
    with ``sections`` merged in (nested dicts merge key by key, e.g. ``adv={"eps": "2/255"}``)."""
    return merge(default_params(), sections)


def merge(base: dict, over: dict[str, Any]) -> dict:
    """``base`` with ``over`` merged in place, recursively for nested mappings; returns ``base``."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base
