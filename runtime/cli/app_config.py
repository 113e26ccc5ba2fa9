"""`AppConfig`: every component's config in one place, loaded from a TOML file.

```toml
[world]            # WorldConfig: name, width, height, fps, seed, checkpoint, device, options
name = "reference"
[session]          # SessionConfig
queue_capacity = 0
[controls]         # IntegratorConfig: move_speed, turn_speed, mouse_sensitivity, ...
move_speed = 1.5
[bindings]         # action = ["key", ...]
forward = ["w", "up"]
[recorder]         # read by worldwalk.stream (crf, preset, codec)
crf = 20
```

Sections other packages own (`recorder`, `server`) are kept as plain tables and turned into their
configs there (`serve` builds its ServeConfig and RecorderConfig from them, checking their keys),
since `runtime` never imports `viewer` or `stream`. An unknown section or key is an error that names
it and lists the valid ones: a typo must not be ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldwalk.controls import Bindings, IntegratorConfig
from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig

FOREIGN_SECTIONS = ("recorder", "server")  # read by `serve` (stream/serve_command.py)


class ConfigError(ValueError):
    pass


@dataclass
class AppConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    controls: IntegratorConfig = field(default_factory=IntegratorConfig)
    bindings: Bindings = field(default_factory=Bindings)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # recorder, server

    @classmethod
    def load(cls, path: str | Path | None) -> AppConfig:
        if path is None:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from e
        return cls.from_mapping(data, str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "config") -> AppConfig:
        known = ("world", "session", "controls", "bindings", *FOREIGN_SECTIONS)
        for name in data:
            if name not in known:
                raise ConfigError(f"{source}: unknown section [{name}]; valid sections: {', '.join(known)}")
        cfg = cls()
        cfg.world = _build(WorldConfig, data.get("world", {}), f"{source} [world]")
        cfg.session = _build(SessionConfig, data.get("session", {}), f"{source} [session]")
        cfg.controls = _build(IntegratorConfig, data.get("controls", {}), f"{source} [controls]")
        if "bindings" in data:
            cfg.bindings = Bindings.from_mapping(data["bindings"], source=f"{source} [bindings]")
        cfg.sections = {k: dict(data[k]) for k in FOREIGN_SECTIONS if k in data}
        return cfg


def _build(kind: type, table: dict[str, Any], where: str) -> Any:
    names = [f.name for f in dataclasses.fields(kind)]
    for key in table:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
    try:
        return kind(**table)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def build_foreign(kind: type, cfg: AppConfig, section: str, **overrides: Any) -> Any:
    """Build another package's config dataclass from its section, then apply flag overrides."""
    table = {**cfg.sections.get(section, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return _build(kind, table, f"[{section}]")
