"""worldwalk.controls: devices -> InputBox (an InputTimeline of every change) -> PathPlanner /
PoseIntegrator -> camera-to-world poses; or, for action worlds, per-frame inputs
(``InputTimeline.frame_inputs``).

numpy only (no GL, no torch), so the window, the browser path and the tests share it. The camera
convention is stated once, in camera.py.
"""

from .action_string import ActionConfig, ActionStringError, action_string_to_poses, parse_action_string
from .bindings import Bindings, BindingsError
from .camera import (
    DEFAULT_FOV_DEG,
    fov_degrees,
    intrinsics_from_fov,
    pose_matrix,
    rot_x,
    rot_y,
    rot_z,
    rotation,
    yaw_pitch_roll,
)
from .gamepad import GamepadConfig, axis_dead_zone, gamepad_to_intent, radial_dead_zone
from .input_box import InputBox
from .input_state import InputState, Intent, key_name
from .path_planner import PathPlanner, PlannedPath, PlannerConfig, PlannerState
from .pose_integrator import IntegratorConfig, IntegratorState, PoseIntegrator
from .timeline import FrameInput, InputTimeline

__all__ = [
    "DEFAULT_FOV_DEG",
    "ActionConfig",
    "ActionStringError",
    "Bindings",
    "BindingsError",
    "FrameInput",
    "GamepadConfig",
    "InputBox",
    "InputState",
    "InputTimeline",
    "IntegratorConfig",
    "IntegratorState",
    "Intent",
    "PathPlanner",
    "PlannedPath",
    "PlannerConfig",
    "PlannerState",
    "PoseIntegrator",
    "action_string_to_poses",
    "axis_dead_zone",
    "fov_degrees",
    "gamepad_to_intent",
    "intrinsics_from_fov",
    "key_name",
    "parse_action_string",
    "pose_matrix",
    "radial_dead_zone",
    "rot_x",
    "rot_y",
    "rot_z",
    "rotation",
    "yaw_pitch_roll",
]
