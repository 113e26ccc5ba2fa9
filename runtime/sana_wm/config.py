"""`SanaWMConfig`: the shape of a SANA-WM streaming transformer.

Field names follow diffusers' `SanaWMTransformer3DModel` config, so a diffusers `config.json` maps onto
this dataclass one to one (`from_diffusers`); the extra fields at the end describe the streaming
runtime (chunk length, attention window, precision of the softmax blocks). The default is the
official 2.6B SANA-WM stage-1 (20 blocks, width 2240, GDN head dim 112, a softmax block every 4th).
`tiny()` is the test model; `small()` is the starting point for the bundled CPU model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class SanaWMConfig:
    # --- diffusers `SanaWMTransformer3DModel` fields (same names, same defaults) ---
    in_channels: int = 128  # latent channels of the VAE
    num_layers: int = 20
    hidden_size: int = 2240
    num_attention_heads: int = 20  # heads of the cross-attention to the prompt
    patch_size: tuple[int, int, int] = (1, 1, 1)
    softmax_every_n: int = 4  # block i is softmax attention when (i + 1) % n == 0; 0 = never
    linear_head_dim: int = 112  # head dim of the self-attention (GDN and softmax blocks)
    t_kernel_size: int = 3  # temporal kernel of the FFN's residual conv
    conv_kernel_size: int = 4  # temporal short conv on K inside GDN blocks
    qk_norm: bool = True
    cross_norm: bool = True
    y_norm: bool = True
    cam_attn_compress: int = 1
    chunk_plucker_channels: int = 48  # 6 Plücker channels x VAE temporal stride
    chunk_plucker_post_attn_blocks: int = 20  # blocks that add the Plücker embedding (< 0: all)
    caption_channels: int = 2304  # Gemma-2-2B hidden size
    mlp_ratio: float = 3.0
    # --- rotary embedding (diffusers hard-codes these) ---
    rope_max_seq_len: int = 1024  # largest row / column index the RoPE table covers (frames: no limit)
    rope_theta: float = 10000.0
    # --- streaming runtime ---
    chunk_latent_frames: int = 3  # latent frames generated per chunk (the first chunk adds the image latent)
    kv_window: int = 2  # official `num_cached_blocks`: softmax blocks see the sink + the last kv_window-1 chunks
    sink: bool = True  # keep chunk 0 as a permanent attention sink in softmax blocks
    # The home view: a chunk whose camera ends back at the session's first view (within `home_radius` in the
    # camera inputs' translation units and `home_angle_deg` between the view directions) reads only the sink
    # in its softmax blocks, as the first view is what is there; on the way in, from (1 + home_fade) times
    # those, the recent chunks' attention fades out (camera.home_weight). home_radius 0: off, as officially.
    home_radius: float = 0.0
    home_angle_deg: float = 20.0
    home_fade: float = 0.0
    softmax_bf16: bool = True  # run softmax SDPA (and keep its K/V cache) in bf16, as the official code does
    caption_tokens: int = 300  # prompt length the official empty-prompt embedding has

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)  # type: ignore[assignment]
        if self.patch_size[0] != 1:
            raise ValueError(f"patch_size must be (1, p, p): frames are never patched; got {self.patch_size}")
        if self.hidden_size % self.linear_head_dim:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be a multiple of linear_head_dim {self.linear_head_dim}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.cam_attn_compress != 1:
            raise ValueError("cam_attn_compress must be 1: the camera branch shares head layout with the main branch")
        if (self.linear_head_dim // 2) % 4:
            raise ValueError(f"linear_head_dim/2 must be a multiple of 4 for UCPE, got {self.linear_head_dim}")
        if self.chunk_plucker_channels % 6:
            raise ValueError(
                f"chunk_plucker_channels must be 6 x VAE temporal stride, got {self.chunk_plucker_channels}"
            )
        if self.kv_window < 1:
            raise ValueError(f"kv_window must be >= 1, got {self.kv_window}")
        check_home_view(self.home_radius, self.home_angle_deg, self.home_fade)
        if self.home_radius > 0 and not self.sink:
            raise ValueError("home_radius > 0 needs sink=True: a chunk back at the first view reads the sink")

    # ---- derived sizes ----
    @property
    def home_view(self) -> tuple[float, float, float] | None:
        """(home_radius, home_angle_deg, home_fade) for `camera.build_camera_inputs`, None when off."""
        return (self.home_radius, self.home_angle_deg, self.home_fade) if self.home_radius > 0 else None

    @property
    def num_heads(self) -> int:
        """Self-attention heads (GDN and softmax blocks)."""
        return self.hidden_size // self.linear_head_dim

    @property
    def plucker_stride(self) -> int:
        """Video frames packed into one latent frame's Plücker input (the VAE temporal stride)."""
        return self.chunk_plucker_channels // 6

    def is_softmax(self, block: int) -> bool:
        return self.softmax_every_n > 0 and (block + 1) % self.softmax_every_n == 0

    def has_plucker(self, block: int) -> bool:
        n = self.chunk_plucker_post_attn_blocks
        return n < 0 or block < n

    # ---- presets ----
    @classmethod
    def tiny(cls, **overrides: Any) -> SanaWMConfig:
        """A few-hundred-k-parameter model for tests (4 blocks, one softmax block)."""
        base = dict(
            in_channels=8,
            num_layers=4,
            hidden_size=64,
            num_attention_heads=2,
            linear_head_dim=32,
            caption_channels=32,
            chunk_plucker_channels=48,
            chunk_plucker_post_attn_blocks=4,
            mlp_ratio=2.0,
            rope_max_seq_len=256,
            caption_tokens=8,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def small(cls, **overrides: Any) -> SanaWMConfig:
        """A CPU-sized model (8 blocks, width 256): the starting point for the bundled model."""
        base = dict(
            in_channels=32,
            num_layers=8,
            hidden_size=256,
            num_attention_heads=4,
            linear_head_dim=64,
            caption_channels=256,
            chunk_plucker_channels=48,
            chunk_plucker_post_attn_blocks=8,
            mlp_ratio=2.5,
            rope_max_seq_len=4096,
            caption_tokens=16,
            softmax_bf16=False,
        )
        base.update(overrides)
        return cls(**base)

    # ---- diffusers interop ----
    _DIFFUSERS_FIXED = {
        "ffn_type": "GLUMBConvTemp",
        "k_conv_only": True,
        "pos_embed_type": "wan_rope",
        "use_chunk_plucker_post_attn": True,
        "use_pe": True,
        "pred_sigma": False,
        "learn_sigma": False,
    }
    _DIFFUSERS_FIELDS = (
        "in_channels",
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "patch_size",
        "softmax_every_n",
        "linear_head_dim",
        "t_kernel_size",
        "conv_kernel_size",
        "qk_norm",
        "cross_norm",
        "y_norm",
        "cam_attn_compress",
        "chunk_plucker_channels",
        "chunk_plucker_post_attn_blocks",
        "caption_channels",
        "mlp_ratio",
    )

    def to_diffusers(self) -> dict[str, Any]:
        """Keyword arguments for diffusers' `SanaWMTransformer3DModel(**kw)` with the same layout."""
        kw = {name: getattr(self, name) for name in self._DIFFUSERS_FIELDS}
        kw["patch_size"] = tuple(self.patch_size)
        return kw

    @classmethod
    def from_diffusers(cls, config: dict[str, Any], **overrides: Any) -> SanaWMConfig:
        """Build from a diffusers `config.json` dict; options this runtime does not implement raise."""
        for key, want in cls._DIFFUSERS_FIXED.items():
            if key in config and config[key] != want:
                raise ValueError(f"unsupported SANA-WM config: {key}={config[key]!r} (this runtime needs {want!r})")
        kw = {name: config[name] for name in cls._DIFFUSERS_FIELDS if name in config}
        if "patch_size" in kw:
            kw["patch_size"] = tuple(kw["patch_size"])
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SanaWMConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SanaWMConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)


def check_home_view(radius: float, angle_deg: float, fade: float) -> None:
    """Raise ValueError unless the home view's radius and fade are >= 0 and its angle in (0, 180] degrees."""
    if not (radius >= 0 and 0 < angle_deg <= 180 and fade >= 0):
        raise ValueError(f"home_radius and home_fade must be >= 0 and home_angle_deg in (0, 180]; got "
                         f"{radius}, {fade}, {angle_deg}")
