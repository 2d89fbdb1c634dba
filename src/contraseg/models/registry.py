"""Methods by name: `register` them, `build_method` from a config dict, `list_methods`.

Three ways a method becomes known, all through `@register`:
- the built-in methods (their modules are imported on first lookup, not at start-up);
- plugins: installed packages that declare an entry point in the group `contraseg.methods`
  (`[project.entry-points."contraseg.methods"] mine = "my_package.method"`); the module is
  imported on first lookup; one that fails to import is one warning line and the rest works;
- `--method package.module:Class`: that module is imported and the class's registered name
  used.

A run records where its method came from (`method_source`: module, distribution, version) in
run.json and in every checkpoint, so predict, evaluate and resume import a plugin module again
even when it was named by `module:Class` rather than installed as an entry point.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from contraseg._version import __version__
from contraseg.errors import ConfigError, ContrasegWarning
from contraseg.models.base import Method, MethodKind
from contraseg.utils.text import did_you_mean

ENTRY_POINT_GROUP = "contraseg.methods"
# Modules whose import registers the built-in methods
BUILTIN_MODULES = ("contraseg.models.unet", "contraseg.models.rfnet", "contraseg.models.dcseg",
                   "contraseg.models.dclmanet", "contraseg.models.introvae",
                   "contraseg.models.clfc", "contraseg.models.swinmoco")

Presets = Traversable | Path


@dataclass(frozen=True)
class MethodSource:
    """Where a registered method's code comes from (recorded with every run)."""

    module: str
    distribution: str | None  # the installed package that holds the module; None: not installed
    version: str | None
    entry_point: str | None = None  # the `contraseg.methods` entry point that loaded it

    @property
    def builtin(self) -> bool:
        return self.module.startswith("contraseg.")

    def to_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        if self.builtin:
            return "contraseg"
        return f"{self.distribution or self.module} {self.version or ''}".strip()


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type[Method]
    config_cls: type
    presets: Presets | None  # the YAML file of its presets, one mapping per preset name
    source: MethodSource


_REGISTRY: dict[str, Entry] = {}
_loading_entry_point: list[str] = []  # set while a plugin's entry point is imported
_broken_plugins: dict[str, str] = {}  # entry point -> why it could not be loaded
_loaded = {"builtins": False, "plugins": False}


def register(name: str, config_cls: type, *, presets: Presets | str | None = None
             ) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: `@register("unet", UNetConfig)`; `config_cls` is a dataclass.

    presets: the YAML file of the method's presets (a path, or `importlib.resources.files(
    __package__) / "mine.yaml"` inside a package). Built-in methods default to
    contraseg/configs/<name>.yaml; a method without presets runs only from a saved config.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls} must be a dataclass")

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register('{name}'): {cls} is not a contraseg Method subclass")
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            other = _REGISTRY[name].source.module
            raise ValueError(f"method '{name}' is already registered (by {other})")
        _REGISTRY[name] = Entry(name, cls, config_cls, _preset_file(name, cls, presets),
                                _source_of(cls))
        cls.method_name = name
        return cls

    return decorate


def _preset_file(name: str, cls: type, presets: Presets | str | None) -> Presets | None:
    if presets is not None:
        return Path(presets) if isinstance(presets, str) else presets
    if cls.__module__.startswith("contraseg."):
        return resources.files("contraseg.configs").joinpath(f"{name}.yaml")
    return None


def _source_of(cls: type) -> MethodSource:
    module = cls.__module__
    if module.startswith("contraseg."):
        return MethodSource(module, "contraseg", __version__)
    top = module.split(".")[0]
    distributions = metadata.packages_distributions().get(top, [])
    distribution = distributions[0] if distributions else None
    version = metadata.version(distribution) if distribution else None
    entry_point = _loading_entry_point[-1] if _loading_entry_point else None
    return MethodSource(module, distribution, version, entry_point)


def _load_builtins() -> None:
    if not _loaded["builtins"]:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded["builtins"] = True


def _load_plugins() -> None:
    """Import every `contraseg.methods` entry point once; a broken one is a warning."""
    if _loaded["plugins"]:
        return
    _loaded["plugins"] = True
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point, "dist", None)
        label = f"{point.name} ({dist.name} {dist.version})" if dist else point.name
        _loading_entry_point.append(point.name)
        try:
            point.load()
        except Exception as exc:  # a plugin's bug must not take contraseg down
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            _broken_plugins[label] = reason.rstrip(": ")
            warnings.warn(f"plugin {label} ({point.value}) could not be loaded and is left out: "
                          f"{_broken_plugins[label]}", ContrasegWarning, stacklevel=2)
        finally:
            _loading_entry_point.pop()


def _load_all() -> None:
    _load_builtins()
    _load_plugins()


def broken_plugins() -> dict[str, str]:
    """The entry points that could not be loaded, with the reason (after a lookup)."""
    _load_all()
    return dict(_broken_plugins)


def list_methods(kind: MethodKind | str | None = None) -> list[str]:
    """Registered names; `kind` keeps only methods of that MethodKind."""
    _load_all()
    return sorted(name for name, entry in _REGISTRY.items()
                  if kind is None or entry.cls.kind == kind)


def get_entry(name: str, module: str | None = None) -> Entry:
    """The registered method `name`, or `package.module:Class` (imported here).

    module: the module a run recorded for the method (`method_source`), imported when `name`
    is not known otherwise (a method named by `module:Class` when the run was trained)."""
    if ":" in name:
        return _entry_of_class(name)
    _load_all()
    if name not in _REGISTRY and module and not module.startswith("contraseg."):
        _import_method_module(module, f"method {name}")
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(_REGISTRY)
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(known)})"
                          + did_you_mean(name, known)) from None


def canonical_name(name: str) -> str:
    """The registered name of `name` (a name, or `package.module:Class`)."""
    return get_entry(name).name


def _entry_of_class(spec: str) -> Entry:
    module, _, attr = spec.partition(":")
    loaded = _import_method_module(module, f"--method {spec}")
    cls = getattr(loaded, attr, None)
    if cls is None:
        raise ConfigError(f"--method {spec}: module {module} has no attribute '{attr}'")
    _load_all()
    for entry in _REGISTRY.values():
        if entry.cls is cls:
            return entry
    raise ConfigError(f"--method {spec}: {attr} is not a registered method (decorate it with "
                      "@contraseg.models.registry.register(NAME, CONFIG))")


def _import_method_module(module: str, what: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise ConfigError(f"{what}: cannot import {module} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          ) from None


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


def pretraining_stage(name: str) -> str:
    """The registered PRETRAINING method that `name` declares as its `pretraining_stage`;
    refused in one line, naming the methods that have one, when it declares none."""
    entry = get_entry(name)
    if entry.cls.kind is MethodKind.PRETRAINING:
        return entry.name
    stage = entry.cls.pretraining_stage
    if stage is None:
        with_stage = [n for n in list_methods(MethodKind.SEGMENTATION)
                      if get_entry(n).cls.pretraining_stage]
        raise ConfigError(f"--method {name} has no pre-training stage (methods with one: "
                          f"{', '.join(with_stage) or 'none'})")
    get_entry(stage)  # a declared stage that is not registered is refused by name
    return stage
