"""`MatrixGameConfig`: the shape of a Matrix-Game 2.0 world (causal Wan DiT, action module, sampler, VAE).

The defaults are the official distilled universal model (Wan 2.1 1.3B based: 30 blocks, width 1536,
12 heads; keyboard + mouse action modules in blocks 0-14; a 6-frame cache window; 3 warped steps;
352x640 frames = 44x80 latents = 880 tokens a frame). `for_mode` gives the GTA-drive and TempleRun
variants, `tiny()` the test model that the goldens in tests/data were made with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MODES = ("universal", "gta_drive", "templerun")


@dataclass
class MatrixGameConfig:
    # --- the DiT (names as upstream's CausalWanModel config) ---
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256  # sinusoidal time-embedding width
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 36  # noisy latent (16) + mask (4) + image-condition latent (16)
    out_dim: int = 16  # latent channels
    patch: tuple[int, int] = (2, 2)  # spatial patch; frames are never patched
    eps: float = 1e-6
    clip_dim: int = 1280  # width of the CLIP image tokens the image embedder reads
    local_attn_size: int = 6  # latent frames each cache keeps and each attention sees
    rope_theta: float = 10000.0
    # --- the action module (upstream's action_config) ---
    mode: str = "universal"
    action_blocks: tuple[int, ...] = tuple(range(15))
    keyboard_dim: int = 4  # keys per raw frame: 4 universal [W,S,A,D], 2 GTA [W,S], 7 TempleRun
    mouse: bool = True  # TempleRun has no mouse
    mouse_dim: int = 2  # [pitch, yaw]
    keyboard_embed_dim: int = 128  # upstream `hidden_size`
    action_hidden: int = 1024  # upstream `mouse_hidden_dim` = `keyboard_hidden_dim`
    action_heads: int = 16  # head dim 64 (the action RoPE table is built for 64)
    action_rope_dims: tuple[int, int, int] = (8, 28, 28)  # only the first (time) axis rotates
    action_rope_theta: float = 256.0
    vae_time_ratio: int = 4  # raw frames per latent frame (the first latent has one)
    action_window: int = 3  # latent frames of raw actions each latent frame reads (x vae_time_ratio)
    # --- sampler ---
    frames_per_block: int = 3
    denoising_steps: tuple[int, ...] = (1000, 666, 333)  # warped through the shifted schedule
    timestep_shift: float = 5.0
    train_timesteps: int = 1000
    # --- frame geometry and VAE ---
    latent_height: int = 44
    latent_width: int = 80
    vae_dim: int = 96
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_res_blocks: int = 2
    fps: int = 25

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even width")
        if self.action_hidden // self.action_heads != sum(self.action_rope_dims):
            raise ValueError("action head dim must equal sum(action_rope_dims) (upstream's table is 64 wide)")
        if self.latent_height % self.patch[0] or self.latent_width % self.patch[1]:
            raise ValueError("latent size must be a multiple of the patch")
        self.patch = tuple(self.patch)  # type: ignore[assignment]
        self.action_blocks = tuple(self.action_blocks)
        self.denoising_steps = tuple(self.denoising_steps)

    # --- derived sizes ---
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def action_head_dim(self) -> int:
        return self.action_hidden // self.action_heads

    @property
    def frame_tokens(self) -> int:
        """Tokens a latent frame: 880 at 352x640."""
        return (self.latent_height // self.patch[0]) * (self.latent_width // self.patch[1])

    @property
    def raw_window(self) -> int:
        """Raw action frames each latent frame reads (12)."""
        return self.vae_time_ratio * self.action_window

    @property
    def height(self) -> int:
        return 8 * self.latent_height

    @property
    def width(self) -> int:
        return 8 * self.latent_width

    def raw_frames(self, latent_frames: int) -> int:
        """Raw (pixel-rate) frames that `latent_frames` latent frames decode to: 1 + 4 (n - 1)."""
        return 1 + self.vae_time_ratio * (latent_frames - 1) if latent_frames else 0

    # --- named variants ---
    @classmethod
    def for_mode(cls, mode: str, **overrides) -> MatrixGameConfig:
        """Upstream's three distilled models: their action spaces, cache windows and sampler steps."""
        per_mode = {
            "universal": dict(keyboard_dim=4, mouse=True, local_attn_size=6, denoising_steps=(1000, 666, 333)),
            "gta_drive": dict(keyboard_dim=2, mouse=True, local_attn_size=4, denoising_steps=(1000, 666, 333)),
            "templerun": dict(keyboard_dim=7, mouse=False, local_attn_size=6, denoising_steps=(1000, 750, 500, 250)),
        }
        if mode not in per_mode:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return cls(mode=mode, **{**per_mode[mode], **overrides})

    @classmethod
    def tiny(cls, mode: str = "universal", **overrides) -> MatrixGameConfig:
        """The test model of tests/goldens/matrix_game_tiny.py: 2 blocks of width 64, a 4x6 latent."""
        small = dict(
            dim=64, ffn_dim=96, num_heads=2, num_layers=2, action_blocks=(0,), keyboard_embed_dim=16,
            action_hidden=64, action_heads=1, latent_height=4, latent_width=6, vae_dim=16,
        )
        return cls.for_mode(mode, **{**small, **overrides})

    def with_(self, **changes) -> MatrixGameConfig:
        return replace(self, **changes)
