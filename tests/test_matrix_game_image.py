"""The first image as upstream prepares it (inference.py: `_resizecrop`, then torchvision's
`Resize((352, 640), antialias=True)` on the PIL image, `ToTensor`, `Normalize(0.5, 0.5)`): a PIL crop
whose half-pixel box edges round to even, PIL's bilinear filter on the 8-bit image, not torch's."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from worldwalk.runtime.matrix_game.config import MatrixGameConfig
from worldwalk.runtime.matrix_game.world import image_tensor


def normalised(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(u8)).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.5)


def test_the_crop_rounds_its_half_pixel_edges_as_pil_does() -> None:
    cfg = MatrixGameConfig()
    rows = (np.arange(355)[:, None, None] % 256).repeat(640, 1).repeat(3, 2).astype(np.uint8)
    # 3 rows too many: the box is rows 1.5 .. 353.5, which PIL takes as 2 .. 354 (no resize after)
    assert torch.equal(image_tensor(rows, cfg), normalised(rows[2:354]))


def test_the_first_image_is_resized_with_pils_bilinear_filter() -> None:
    cfg = MatrixGameConfig()
    image = np.random.default_rng(0).integers(0, 256, (251, 517, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    w = int(251 * 640 / 352)  # wider than 352:640 -> full height, centred width: columns 30.5 .. 486.5
    pil = pil.crop(((517 - w) / 2, 0.0, (517 + w) / 2, 251.0)).resize((640, 352), Image.Resampling.BILINEAR)
    assert torch.equal(image_tensor(image, cfg), normalised(np.asarray(pil)))
