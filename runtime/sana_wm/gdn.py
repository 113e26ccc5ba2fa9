"""Gated DeltaNet linear attention, chunk-causal with recurrent state (the 15 GDN blocks of SANA-WM).

Per frame t (S tokens, keys K_t and values V_t as D x S matrices) the delta rule updates a D x D state

    W_t = g_t (I - (K_t * beta_t) K_t^T),   U_t = (V_t * beta_t) K_t^T,   state_t = state_{t-1} W_t + U_t

with a per-frame decay g_t = exp(-exp(A_log) softplus(gate_proj(mean_s x_t) + dt_bias)) and per-token
beta = sigmoid(beta_proj(x)). The main branch reads out num_t = state_t Q_rot,t with RoPE applied to
q and k, and divides by a normaliser built the same way from the un-rotated keys (z_t = W'_t z_{t-1}
+ sum_s (K_t * beta_t)); keys are scaled by D^-1/2 S^-1/2 after a ReLU feature map. The camera branch
runs the same rule on UCPE-transformed q/k/v without the normaliser.

Chunk-causal streaming (as the official streaming model): the forward scan starts from the state the
previous chunks left and covers frames <= t; a backward scan stays inside the chunk and covers frames
> t; the two are summed. On a first chunk this is exactly diffusers' bidirectional GDN.

Difference from diffusers 0.42.1 (documented on purpose): diffusers rescales the camera branch's q/k/v
after UCPE back to their pre-UCPE RMS (`_downscale_to_reference_rms`); the official streaming code does
not, and neither do we. Everything else matches diffusers to fp32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import GDNCache, owned
from .camera import UcpeTransforms, apply_ucpe
from .layers import SelfAttentionParams, fp32_island
from .rope import apply_rope

EPS = 1e-8  # normaliser epsilon of the main branch (the official blocks pass eps=1e-8)


@fp32_island  # the recurrent state stays fp32 under autocast too
def delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    decay: torch.Tensor,
    state: torch.Tensor | None,
    zq: torch.Tensor | None = None,
    zk: torch.Tensor | None = None,
    z_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Chunk-causal delta rule in fp32.

    q, k, v: (B, H, T, D, S) frame-major; beta (B, H, T, 1, S); decay (B, H, T, 1, 1);
    state (B, H, D, D) or None. zq/zk (un-rotated q/k) switch on the normaliser with z_state (B, H, D, 1).
    Returns (numerator (B, H, T, D, S), denominator (B, H, T, 1, S) or None, final state, final z).
    """
    B, H, T, D, S = q.shape
    eye = torch.eye(D, device=q.device, dtype=q.dtype)
    W = decay * (eye - (k * beta) @ k.transpose(-1, -2))  # (B, H, T, D, D)
    U = (v * beta) @ k.transpose(-1, -2)
    s = q.new_zeros(B, H, D, D) if state is None else state.float()
    num = []
    for t in range(T):  # forward: frames <= t, seeded by the cache
        s = s @ W[:, :, t] + U[:, :, t]
        num.append(s @ q[:, :, t])
    final = s
    back = [q.new_zeros(B, H, D, S)]
    b = q.new_zeros(B, H, D, D)
    for t in range(T - 2, -1, -1):  # backward: frames > t inside this chunk
        b = b @ W[:, :, t + 1] + U[:, :, t + 1]
        back.append(b @ q[:, :, t])
    numerator = torch.stack(num, 2) + torch.stack(back[::-1], 2)
    if zq is None:
        return numerator, None, final, None
    Wz = decay * (eye - (zk * beta) @ zk.transpose(-1, -2))
    Uz = (zk * beta).sum(-1, keepdim=True)  # (B, H, T, D, 1)
    z = q.new_zeros(B, H, D, 1) if z_state is None else z_state.float()
    den = []
    for t in range(T):
        z = Wz[:, :, t] @ z + Uz[:, :, t]
        den.append(z.transpose(-1, -2) @ zq[:, :, t])
    z_final = z
    back_z = [q.new_zeros(B, H, 1, S)]
    bz = q.new_zeros(B, H, D, 1)
    for t in range(T - 2, -1, -1):
        bz = Wz[:, :, t + 1] @ bz + Uz[:, :, t + 1]
        back_z.append(bz.transpose(-1, -2) @ zq[:, :, t])
    denominator = torch.stack(den, 2) + torch.stack(back_z[::-1], 2)
    return numerator, denominator, final, z_final


def _frames(x: torch.Tensor, T: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, T, D, S) fp32."""
    B, H, N, D = x.shape
    return x.float().reshape(B, H, T, N // T, D).transpose(-1, -2)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D, S) -> (B, H, N, D)."""
    B, H, T, D, S = x.shape
    return x.transpose(-1, -2).reshape(B, H, T * S, D)


class GDNAttention(SelfAttentionParams):
    """One GDN self-attention block (main + camera branch) over one chunk, reading and writing its cache."""

    def __init__(self, dim: int, heads: int, use_qk_norm: bool, short_conv: int) -> None:
        super().__init__(dim, heads, use_qk_norm, short_conv)
        self.short_conv = short_conv

    def gates(self, x: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """beta (B, H, T, 1, S) and decay (B, H, T, 1, 1), fp32."""
        B, N, C = x.shape
        S = N // T
        beta = torch.sigmoid(self.beta_proj(x)).view(B, T, S, self.heads).permute(0, 3, 1, 2)
        gate = self.gate_proj(x.view(B, T, S, C).mean(2)).float()  # (B, T, H)
        decay = torch.exp(-self.A_log.float().exp() * F.softplus(gate + self.dt_bias.float()))
        return beta.float().unsqueeze(3), decay.transpose(1, 2)[..., None, None]

    def forward(
        self,
        x: torch.Tensor,
        T: int,
        rope: torch.Tensor,
        ucpe: UcpeTransforms | None,
        cam_rope: torch.Tensor | None,
        cache: GDNCache,
        write: bool,
    ) -> tuple[torch.Tensor, GDNCache | None]:
        """x (B, N, C) -> (B, N, C); returns the updated cache when `write`."""
        B, N, C = x.shape
        S, D = N // T, self.head_dim
        beta, decay = self.gates(x, T)
        k_scale = float(D) ** -0.5 * float(S) ** -0.5  # a constant in exported graphs (traced, bf16 mis-casts it)

        # 1. main branch: qkv -> short conv on K -> RMSNorm -> ReLU -> key scale -> RoPE on the numerator
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k_tail = None
        if self.short_conv > 0:
            k, k_tail = self.conv_k(k, T, cache.k_tail)
        q = torch.relu(self.split_heads(self.q_norm(q)))
        k = torch.relu(self.split_heads(self.k_norm(k))) * k_scale
        v = self.split_heads(v)
        num, den, state, z = delta_scan(
            _frames(apply_rope(q, rope), T),
            _frames(apply_rope(k, rope), T),
            _frames(v, T),
            beta,
            decay,
            cache.state,
            _frames(q, T),
            _frames(k, T),
            cache.norm_state,
        )
        main = _tokens(num / (den + EPS)).to(x.dtype).transpose(1, 2).reshape(B, N, C)

        # 2. camera branch: same gates, UCPE instead of RoPE, no normaliser, no RMS rescale (see module doc)
        cam, cam_state, cam_tail = None, None, None
        if ucpe is not None:
            qc, kc, vc = self.q_proj_cam(x), self.k_proj_cam(x), self.v_proj_cam(x)
            if self.short_conv > 0:
                kc, cam_tail = self.conv_k_cam(kc, T, cache.cam_k_tail)
            qc = torch.relu(self.split_heads(self.q_norm_cam(qc)))
            kc = torch.relu(self.split_heads(self.k_norm_cam(kc))) * k_scale
            vc = self.split_heads(vc)
            pre = kc.norm(dim=-1).clamp_min(1e-6)  # (B, H, N)
            qc = apply_ucpe(qc, ucpe.P_T, cam_rope)
            kc = apply_ucpe(kc, ucpe.P_inv, cam_rope)
            vc = apply_ucpe(vc, ucpe.P_inv, cam_rope)
            # UCPE inflates key norms; the delta rule's step size is discounted by the frame's mean inflation.
            inflation = ((kc.norm(dim=-1).clamp_min(1e-6) / pre) ** 2).view(B, self.heads, T, S).mean(-1)
            beta_c = beta / inflation.clamp_min(1.0)[..., None, None]
            num_c, _, cam_state, _ = delta_scan(
                _frames(qc, T), _frames(kc, T), _frames(vc, T), beta_c, decay, cache.cam_state
            )
            out_c = apply_ucpe(_tokens(num_c).to(x.dtype), ucpe.P, cam_rope, inverse_rope=True)
            cam = out_c.transpose(1, 2).reshape(B, N, C)

        out = self.finish(main, cam, x)
        if not write:
            return out, None
        return out, GDNCache(state, z, cam_state, owned(k_tail), owned(cam_tail), cache.ffn_tail)
