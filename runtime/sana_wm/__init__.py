"""worldwalk.runtime.sana_wm."""
