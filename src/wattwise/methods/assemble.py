"""Putting a run's callbacks together, in one place: order, services, requirements, trainer settings.

`train.build()` calls `assemble()` once, after every callback is built and before the Trainer
is: the energy monitor goes first (methods read what it closes at each epoch's end), then the
energy methods in hook order (registry order, `runs_after` respected), then the rest
(checkpointing, progress bar). Each method is handed the services it declared
(methods/services.py). A method whose requirement is missing steps aside (or fails, by its
`if_not_applicable`), and the Trainer arguments methods need are collected here and checked
against each other and against what the user set on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L

from wattwise.methods import services as run_services
from wattwise.methods.base import EnergyMethod
from wattwise.methods.registry import method_names, ordered
from wattwise.utils.errors import ConfigError


@dataclass
class Assembly:
    callbacks: list[L.Callback]
    methods: list[EnergyMethod]
    trainer_settings: dict[str, Any] = field(default_factory=dict)


def assemble(
    callbacks: Mapping[str, L.Callback],
    energy: Any,
    trainer_cfg: Mapping[str, Any],
    user_keys: set[str] = frozenset(),  # type: ignore[assignment]
) -> Assembly:
    """Order the callbacks, apply requirements and collect trainer settings (see module doc)."""
    registered = set(method_names())
    methods: list[EnergyMethod] = []
    others: list[L.Callback] = []
    for key, cb in callbacks.items():
        if isinstance(cb, EnergyMethod):
            if cb.name != key:
                raise ConfigError(
                    f"callbacks.{key} holds the energy method `{cb.name}`; put it under callbacks.{cb.name}"
                )
            methods.append(cb)
        elif key in registered:
            raise ConfigError(
                f"callbacks.{key}._target_ must be the `{key}` energy method, got {type(cb).__name__}"
            )
        else:
            others.append(cb)
    measuring = energy is not None and getattr(energy, "mode", "off") != "off"
    for m in methods:
        if "energy" in m.requirements() and not measuring:
            m.step_aside(
                "it needs the run's energy to be measured, but energy=off "
                "(use energy=auto or energy=estimate)"
            )
    settings: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for m in methods:
        if not m.active:
            continue
        for k, v in m.trainer_settings(trainer_cfg).items():
            if k in settings and settings[k] != v:
                raise ConfigError(
                    f"callbacks.{m.name} needs trainer.{k}={v!r} "
                    f"but callbacks.{owner[k]} needs {settings[k]!r}"
                )
            if f"trainer.{k}" in user_keys and trainer_cfg.get(k) != v:
                raise ConfigError(
                    f"trainer.{k}={trainer_cfg.get(k)!r} conflicts with +optim={m.name}, which sets "
                    f"trainer.{k}={v!r}: drop the trainer.{k} override, or set it through {m.config_key}"
                )
            settings[k], owner[k] = v, m.name
    methods = ordered(methods)
    head = [energy] if energy is not None else []
    run_services.bind([*head, *methods])  # the monitor and the services methods provide, handed in once
    return Assembly(callbacks=[*head, *methods, *others], methods=methods, trainer_settings=settings)
