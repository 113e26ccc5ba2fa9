"""worldwalk.runtime.sana_wm: the SANA-WM streaming world model (transformer, cache, sampler, VAE, loading)."""

from .cache import StreamingCache
from .camera import CameraInputs, FieldOfViewError, check_fov
from .config import SanaWMConfig
from .transformer import SanaWMStreamingTransformer

__all__ = [
    "CameraInputs",
    "FieldOfViewError",
    "SanaWMConfig",
    "SanaWMStreamingTransformer",
    "StreamingCache",
    "check_fov",
]
