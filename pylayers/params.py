"""The one ``param_str`` parser of every Python layer: YAML (JSON is YAML too), never ``eval``.

Unknown keys are an error: they are nearly always typos that would silently change nothing. The typed
readers (``param_int``, ``param_bool``) and the keys every data layer shares (``loader_params``) check the
values with messages naming the layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import yaml

from rankiqa.errors import InputError


def load_param_str(param_str: str | None, where: str | os.PathLike, prefix: str = "") -> dict[str, Any]:
    """The mapping a ``param_str`` holds (YAML or JSON; never ``eval``); empty text is ``{}``.

    ``where`` names the layer (or the prototxt) in the InputError for text that is not YAML or not a
    mapping; ``prefix`` goes before the message (e.g. the layer's name when ``where`` is a file).
    """
    try:
        loaded = yaml.safe_load(param_str or "")
    except yaml.YAMLError as err:
        raise InputError(f"{prefix}param_str is not valid YAML: {err}", where) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"{prefix}param_str must be a mapping (e.g. '{{key: value}}'), got {param_str!r}",
                         where)
    return loaded


def parse_params(param_str: str | None, layer: str, defaults: dict[str, Any],
                 required: Iterable[str] = ()) -> dict[str, Any]:
    """Parse a layer's ``param_str`` (``load_param_str``) over ``defaults``.

    Unknown keys are an error (they are nearly always typos that would silently change nothing); so are
    missing ``required`` keys. Raises InputError naming ``layer``.
    """
    loaded = load_param_str(param_str, layer)
    allowed = set(defaults) | set(required)
    unknown = sorted(str(key) for key in loaded if key not in allowed)
    if unknown:
        raise InputError(f"param_str: unknown key(s) {unknown}; known: {sorted(allowed)}", layer)
    missing = [key for key in required if key not in loaded]
    if missing:
        raise InputError(f"param_str: missing required key(s) {missing}", layer)
    params = dict(defaults)
    params.update(loaded)
    return params


def param_int(params: dict[str, Any], key: str, layer: str, minimum: int | None = None) -> int:
    """``params[key]`` as an int (bools and floats rejected), at least ``minimum``."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"param_str: {key} must be an integer, got {value!r}", layer)
    if minimum is not None and value < minimum:
        raise InputError(f"param_str: {key} must be >= {minimum}, got {value}", layer)
    return value


def param_bool(params: dict[str, Any], key: str, layer: str) -> bool:
    """``params[key]`` as a bool (YAML true/false)."""
    value = params[key]
    if not isinstance(value, bool):
        raise InputError(f"param_str: {key} must be true or false, got {value!r}", layer)
    return value


def check_shard(shard_index: int, shard_count: int, layer: str) -> None:
    """A shard index must lie in [0, shard_count)."""
    if not 0 <= shard_index < shard_count:
        raise InputError(f"param_str: shard_index {shard_index} must be in [0, shard_count={shard_count})",
                         layer)


def loader_params(params: dict[str, Any], layer: str) -> dict[str, int]:
    """Validate the keys that every data layer shares."""
    values = {
        "crop": param_int(params, "crop", layer, 1),
        "seed": param_int(params, "seed", layer, 0),
        "workers": param_int(params, "workers", layer, 0),
        "prefetch": param_int(params, "prefetch", layer, 1),
        "shard_index": param_int(params, "shard_index", layer, 0),
        "shard_count": param_int(params, "shard_count", layer, 1),
        "start_batch": param_int(params, "start_batch", layer, 0),
    }
    check_shard(values["shard_index"], values["shard_count"], layer)
    return values
