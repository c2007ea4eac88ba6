"""Plugin discovery: entry points loaded one at a time, failures reported, never fatal.

``pluggy.PluginManager.load_setuptools_entrypoints`` stops at the first broken plugin (one bad
plugin would take the whole CLI down, including the commands to diagnose it). We load each
entry point ourselves, remember what failed with its distribution and version, and fail hard
only when a project actually asks for the broken backend.
"""
from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .backend import Backend
from .errors import ProjectError, did_you_mean

ENTRY_POINT_GROUP = "gradforge"


@dataclass
class PluginInfo:
    """One entry point: where it came from and what became of it."""

    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"              # "ok" | "error: …"
    backends: list[str] = field(default_factory=list)


class Registry:
    """The loaded plugins and the backends they provide."""

    def __init__(self, manager: pluggy.PluginManager, plugins: list[PluginInfo]):
        self.manager = manager
        self.plugins = plugins
        self.backends: dict[str, Backend] = {}
        self.conflicts: list[str] = []
        for plugin, info in self._registered(plugins):
            impl = getattr(plugin, "gradforge_backends", None)
            if impl is None:
                continue
            try:
                found = list(impl() or [])
            except Exception as exc:  # a broken plugin must not break the CLI
                info.status = f"error: gradforge_backends() raised {type(exc).__name__}: {exc}"
                continue
            for backend in found:
                if not isinstance(backend, Backend) or not backend.name:
                    info.status = f"error: returned {backend!r}, not a named Backend"
                    continue
                if backend.name in self.backends:
                    self.conflicts.append(backend.name)
                    info.status = f"error: backend name '{backend.name}' is already taken"
                    continue
                self.backends[backend.name] = backend
                info.backends.append(backend.name)

    def _registered(self, plugins: list[PluginInfo]):
        by_name = {info.name: info for info in plugins}
        for name, plugin in self.manager.list_name_plugin():
            info = by_name.get(name)
            if info is not None and info.status == "ok":
                yield plugin, info

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, or a ProjectError saying why it is unavailable."""
        if name in self.backends:
            return self.backends[name]
        for info in self.plugins:
            if info.name == name and info.status != "ok":
                raise ProjectError(f"backend '{name}' is installed but failed to load "
                                   f"({info.distribution} {info.version}): {info.status}",
                                   key=f"backends.{name}", hint="run `gradforge plugins`")
        raise ProjectError(f"unknown backend '{name}'", key=f"backends.{name}",
                           hint=did_you_mean(name, self.backends)
                           or f"installed: {', '.join(sorted(self.backends)) or 'none'}")


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def load_registry(extra: list[object] | None = None, entry_points: bool = True) -> Registry:
    """Load every ``gradforge`` entry point (plus ``extra`` plugin objects, for tests)."""
    manager = new_manager()
    infos: list[PluginInfo] = []
    if entry_points:
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        for ep in eps:
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, ep.value, dist.metadata["Name"] if dist else "?",
                              dist.version if dist else "?")
            infos.append(info)
            if manager.get_plugin(ep.name) is not None:
                info.status = "error: duplicate entry point name"
                continue
            try:
                plugin = ep.load()
                manager.register(plugin, name=ep.name)
            except Exception as exc:  # report, keep going
                info.status = f"error: {type(exc).__name__}: {exc}"
    for i, plugin in enumerate(extra or []):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        infos.append(PluginInfo(name, name, "(registered in code)", "-"))
        manager.register(plugin, name=name)
    return Registry(manager, infos)
