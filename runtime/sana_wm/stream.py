"""Old names of runtime/sana_wm/rollout.py (`LatentStream` is now `LatentRollout`, `StreamState` is
`RolloutState`: "stream" means the stream/ package and CUDA streams). Kept only until the branches
in flight import from rollout.py; new code must not import this module."""

from .rollout import LatentRollout as LatentStream
from .rollout import RolloutState as StreamState

__all__ = ["LatentStream", "StreamState"]
