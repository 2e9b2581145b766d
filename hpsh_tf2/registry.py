"""Registries: the one place where the names a config may choose are bound to what they build.

Every choice a user makes by name (``loss.name``, ``sampler.mode``, ``eval.backend``,
``train.strategy``, ``model.backbone``, ``index.backend``) is looked up in a :class:`Registry`.
The config layer reads the allowed values from here (no list of names is written a second
time), and the code that builds the chosen object asks the registry for it (no ``if``/``elif``
on strings).

Adding a choice is one module plus one registration line. Built-in entries are registered
below by *import path* (``"package.module:attribute"``), so this module imports nothing heavy
and the config can validate a name without importing TensorFlow; the path is imported the first
time the entry is used. Code outside the package registers the object itself::

    from hpsh_tf2.registry import LOSSES

    @LOSSES.register("my_loss")
    class MyLoss(keras.losses.Loss): ...

or, for a module that is imported by name (``--plugin my_package.losses`` on the CLI, or the
``hpsh_tf2.plugins`` entry-point group), the same decorator at its top level.

Registration happens at import time and is kept for the life of the process, as with
``keras.saving.register_keras_serializable``; :meth:`Registry.scoped` lets a test register an
entry for the duration of a ``with`` block only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from hpsh_tf2.errors import ConfigError

__all__ = [
    "BACKBONES",
    "DATA_FORMATS",
    "INDEX_BACKENDS",
    "LOSSES",
    "PLUGIN_GROUP",
    "REGISTRIES",
    "SAMPLERS",
    "SEARCH_BACKENDS",
    "STRATEGIES",
    "Registry",
    "RegistryError",
    "load_entry_point_plugins",
    "load_plugins",
]

T = TypeVar("T")


class RegistryError(ConfigError):
    """An unknown name, or a name registered twice."""


class Registry(Generic[T]):
    """A mapping from names to factories, for one kind of choice.

    Args:
        kind: What the entries are, for messages (``"loss"``).
        key: The dotted config key that selects an entry (``"loss.name"``).
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T | str] = {}
        self._docs: dict[str, str] = {}

    # ------------------------------------------------------------------ registration

    def register(
        self, name: str, target: T | str | None = None, *, doc: str = "", override: bool = False
    ) -> Any:
        """Registers ``target`` under ``name``; without ``target``, returns a decorator.

        Args:
            name: The name a config uses (lower case, digits and ``_``).
            target: The factory (a class or function), or its import path
                ``"package.module:attribute"`` (imported on first use).
            doc: One line for the reference documentation (defaults to the target's first
                docstring line once imported).
            override: Allow replacing an existing entry.

        Raises:
            RegistryError: For a malformed name, or a name already registered (without
                ``override``).
        """
        if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise RegistryError(
                f"{self.kind} registry: invalid name {name!r}; expected lower-case letters, "
                "digits and underscores"
            )
        if target is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, doc=doc, override=override)
                return obj

            return decorator
        if name in self._entries and not override:
            raise RegistryError(
                f"{self.kind} registry: {name!r} is already registered "
                f"({self._describe(name)}); pass override=True to replace it"
            )
        self._entries[name] = target
        self._docs[name] = doc
        return target

    def unregister(self, name: str) -> None:
        """Removes ``name`` (no error if absent)."""
        self._entries.pop(name, None)
        self._docs.pop(name, None)

    @contextlib.contextmanager
    def scoped(self, name: str, target: T | str) -> Iterator[T | str]:
        """Registers ``target`` for the duration of a ``with`` block (tests)."""
        previous = self._entries.get(name)
        previous_doc = self._docs.get(name, "")
        self.register(name, target, override=True)
        try:
            yield target
        finally:
            if previous is None:
                self.unregister(name)
            else:
                self.register(name, previous, doc=previous_doc, override=True)

    # ------------------------------------------------------------------ look-up

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        """Same as :meth:`get`."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def expected(self) -> str:
        """``"one of 'a', 'b', 'c'"``: the allowed values, for error messages and docs."""
        return "one of " + ", ".join(repr(n) for n in self._entries)

    def get(self, name: str) -> T:
        """The factory registered under ``name``, importing it on first use.

        Raises:
            RegistryError: ``name`` is not registered; the message names the config key and
                lists the registered names.
        """
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} {name!r} ('{self.key}'); expected {self.expected()}"
            )
        target = self._entries[name]
        if isinstance(target, str):
            target = _import_target(target)
            self._entries[name] = target
        return target

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Calls the factory registered under ``name`` with the given arguments."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def doc(self, name: str) -> str:
        """One line describing the entry (its ``doc``, else the target's docstring)."""
        if self._docs.get(name):
            return self._docs[name]
        target = self.get(name)
        text = (getattr(target, "__doc__", None) or "").strip()
        return text.splitlines()[0] if text else ""

    def _describe(self, name: str) -> str:
        target = self._entries[name]
        if isinstance(target, str):
            return target
        return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"


def _import_target(path: str) -> Any:
    """Imports ``"package.module:attribute"``."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise RegistryError(f"invalid import path {path!r}; expected 'package.module:attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RegistryError(f"{module_name} has no attribute {attribute!r} ({path})") from None


def load_plugins(modules: tuple[str, ...] | list[str]) -> None:
    """Imports plugin modules by name, so that their registrations run.

    Raises:
        RegistryError: A module cannot be imported; the message names it.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(f"cannot import plugin module {name!r}: {err}") from None


PLUGIN_GROUP = "hpsh_tf2.plugins"
"""The entry-point group of installed plugins: ``name = "package.module"`` in a package's
``[options.entry_points]`` (setup.cfg) or ``[project.entry-points."hpsh_tf2.plugins"]``."""


def load_entry_point_plugins(group: str = PLUGIN_GROUP) -> tuple[str, ...]:
    """Imports every installed plugin of the entry-point ``group``, so its registrations run.

    Returns:
        The entry points' values (module paths), in the order loaded.

    Raises:
        RegistryError: A plugin cannot be imported; the message names the entry point and its
            distribution.
    """
    loaded = []
    for entry in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            entry.load()
        except (ImportError, AttributeError) as err:
            owner = f" of {entry.dist.name}" if entry.dist is not None else ""
            raise RegistryError(
                f"cannot load plugin {entry.name!r} ({entry.value}){owner} from the {group!r} "
                f"entry points: {err}"
            ) from None
        loaded.append(entry.value)
    return tuple(loaded)


# ---------------------------------------------------------------------- the registries

LOSSES: Registry[Any] = Registry("loss", "loss.name")
SAMPLERS: Registry[Any] = Registry("sampler", "sampler.mode")
SEARCH_BACKENDS: Registry[Any] = Registry("search backend", "eval.backend")
STRATEGIES: Registry[Any] = Registry("training strategy", "train.strategy")
BACKBONES: Registry[Any] = Registry("backbone", "model.backbone")
INDEX_BACKENDS: Registry[Any] = Registry("index backend", "index.backend")
DATA_FORMATS: Registry[Any] = Registry("data format", "data.format")

REGISTRIES: dict[str, Registry[Any]] = {
    r.key: r
    for r in (
        LOSSES,
        SAMPLERS,
        SEARCH_BACKENDS,
        STRATEGIES,
        BACKBONES,
        INDEX_BACKENDS,
        DATA_FORMATS,
    )
}
"""Every registry by the config key it serves (the reference docs list them from here)."""

# Built-in entries: one line each, by import path (imported on first use). Keep each block in
# the order the reference documentation should list it.

# data.format: how the images of data.root and their labels are read (hpsh_tf2/data/formats.py).
DATA_FORMATS.register("folders", "hpsh_tf2.data.formats:read_folders")
DATA_FORMATS.register("manifest", "hpsh_tf2.data.formats:read_manifest_format")
DATA_FORMATS.register("bigearthnet", "hpsh_tf2.data.formats:read_bigearthnet")
DATA_FORMATS.register("mlrsnet", "hpsh_tf2.data.formats:read_mlrsnet")
DATA_FORMATS.register("ucmd_multilabel", "hpsh_tf2.data.formats:read_ucmd_multilabel")

SAMPLERS.register("hpsh", "hpsh_tf2.ops.sampling:HPSH")
SAMPLERS.register("original", "hpsh_tf2.ops.sampling:ORIGINAL")
SAMPLERS.register("random", "hpsh_tf2.ops.sampling:RANDOM")
SAMPLERS.register("semihard", "hpsh_tf2.ops.sampling:SEMIHARD")
SAMPLERS.register("hard", "hpsh_tf2.ops.sampling:HARD")

SEARCH_BACKENDS.register("tf", "hpsh_tf2.evaluation.search:tf_topk")
SEARCH_BACKENDS.register("numpy", "hpsh_tf2.evaluation.search:numpy_topk")
SEARCH_BACKENDS.register("faiss", "hpsh_tf2.evaluation.search:faiss_topk")

STRATEGIES.register("default", "hpsh_tf2.training.strategies:DEFAULT")
STRATEGIES.register("mirrored", "hpsh_tf2.training.strategies:MIRRORED")
STRATEGIES.register("multi_worker", "hpsh_tf2.training.strategies:MULTI_WORKER")

BACKBONES.register("inception_v3", "hpsh_tf2.models.backbone:INCEPTION_V3")
BACKBONES.register("resnet50", "hpsh_tf2.models.backbone:RESNET50")
BACKBONES.register("mobilenet_v2", "hpsh_tf2.models.backbone:MOBILENET_V2")
BACKBONES.register("densenet121", "hpsh_tf2.models.backbone:DENSENET121")
BACKBONES.register("efficientnet_b0", "hpsh_tf2.models.backbone:EFFICIENTNET_B0")

INDEX_BACKENDS.register("milvus", "hpsh_tf2.index.store:IndexStore")
INDEX_BACKENDS.register("memory", "hpsh_tf2.index.memory:MemoryIndex")

LOSSES.register("hpsh", "hpsh_tf2.losses.hpsh:HPSHHashLoss")
LOSSES.register("dpsh", "hpsh_tf2.losses.dpsh:DPSHLoss")
LOSSES.register("dsh", "hpsh_tf2.losses.dsh:DSHLoss")
LOSSES.register("hashnet", "hpsh_tf2.losses.hashnet:HashNetLoss")
LOSSES.register("dch", "hpsh_tf2.losses.dch:DCHLoss")
LOSSES.register("csq", "hpsh_tf2.losses.csq:CSQLoss")
LOSSES.register("greedyhash", "hpsh_tf2.losses.greedyhash:GreedyHashLoss")
LOSSES.register("dtsh", "hpsh_tf2.losses.dtsh:DTSHLoss")
