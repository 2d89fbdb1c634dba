"""Methods by name: `register` them, `build_method` from a config dict, `list_methods`."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from contraseg.errors import ConfigError
from contraseg.models.base import Method

# Modules whose import registers the built-in methods (imported on first lookup, not at start-up).
BUILTIN_MODULES = ("contraseg.models.unet", "contraseg.models.rfnet", "contraseg.models.dcseg",
                   "contraseg.models.dclmanet", "contraseg.models.introvae",
                   "contraseg.models.clfc", "contraseg.models.swinmoco")


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type[Method]
    config_cls: type


_REGISTRY: dict[str, Entry] = {}


def register(name: str, config_cls: type) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: `@register("unet", UNetConfig)`; `config_cls` is a dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls} must be a dataclass")

    def decorate(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method '{name}' is already registered")
        _REGISTRY[name] = Entry(name, cls, config_cls)
        cls.method_name = name
        return cls

    return decorate


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_methods(kind: str | None = None) -> list[str]:
    """Registered names; `kind` ("segmentation", "generator") keeps only methods of that kind."""
    _load_builtins()
    return sorted(name for name, entry in _REGISTRY.items()
                  if kind is None or entry.cls.kind == kind)


def get_entry(name: str) -> Entry:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(sorted(_REGISTRY))})")\
            from None


def make_config(name: str, values: Mapping | None = None):
    """The method's typed config from a plain dict; unknown keys are refused by name."""
    config_cls = get_entry(name).config_cls
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"method '{name}' has no model settings {unknown} "
                          f"(known: {', '.join(sorted(known))})")
    return config_cls(**values)


def build_method(
    name: str,
    modalities: tuple[str, ...],
    num_classes: int,
    model: Mapping | None = None,
    loss_weights: Mapping[str, float] | None = None,
) -> Method:
    """Build a registered method from its name, modality names, class count and settings."""
    entry = get_entry(name)
    return entry.cls(tuple(modalities), num_classes, make_config(name, model),
                     dict(loss_weights or {}))
