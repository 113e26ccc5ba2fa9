"""pyglet devices -> the session's `InputBox`: key names and the optional gamepad.

Imports pyglet's window and input modules lazily: both need a display, and `worldwalk --help`
must work without one.
"""

from __future__ import annotations

import sys
from typing import Any

from worldwalk.controls import InputBox
from worldwalk.controls.input_state import key_name


def pyglet_key_name(symbol: int) -> str:
    """Our key name for a pyglet key symbol: "w", "shift", "space", "left", "1", "f1", ..."""
    from pyglet.window import key

    raw = key.symbol_string(symbol)  # "W", "LSHIFT", "_1", "NUM_1", "F1"
    if raw.startswith("_") and raw[1:].isdigit():
        raw = raw[1:]
    return key_name(raw)


class Gamepad:
    """The first game controller pyglet finds, polled once per display frame.

    No controller (or no /dev/input at all, or any failure of the platform's device layer) is
    not an error: `open()` says "no gamepad found" once and the window carries on.
    """

    def __init__(self) -> None:
        self.controller: Any = None
        self.name: str | None = None
        self._told = False

    def open(self) -> bool:
        try:
            import pyglet.input

            controllers = pyglet.input.get_controllers()
            if controllers:
                controller = controllers[0]
                controller.open()
                self.controller, self.name = controller, str(getattr(controller, "name", "gamepad"))
                print(f"worldwalk play: gamepad: {self.name}", file=sys.stderr)
                return True
            reason = "no controller connected"
        except FileNotFoundError as e:  # no /dev/input on this machine
            reason = f"{e.filename or e} does not exist"
        except Exception as e:  # any other device-layer failure must not stop the window
            reason = f"{type(e).__name__}: {e}"
        self._say_none(reason)
        return False

    def _say_none(self, reason: str) -> None:
        if not self._told:
            self._told = True
            print(f"worldwalk play: no gamepad found ({reason}); keyboard and mouse only", file=sys.stderr)

    def poll(self, inputs: InputBox) -> None:
        """Copy the sticks (x right, y down) and triggers into `inputs`."""
        c = self.controller
        if c is None:
            return
        try:
            inputs.set_gamepad(
                (float(c.leftx), float(c.lefty)),  # pyglet's raw axes: y grows downward
                (float(c.rightx), float(c.righty)),
                float(c.lefttrigger),
                float(c.righttrigger),
            )
        except Exception as e:  # unplugged mid-game
            print(f"worldwalk play: gamepad lost ({type(e).__name__}: {e})", file=sys.stderr)
            self.close()

    def close(self) -> None:
        if self.controller is not None:
            try:
                self.controller.close()
            except Exception:
                pass
        self.controller = None
        self.name = None
