"""Training-only image augmentation (`preprocess.augment`), done on the batch where it lies (one
batched call per change, on the training device): a left-right flip, a random resized crop through
one affine resampling, and colour jitter of brightness and contrast.  Evaluation, the check's
statistics and predictions never see it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jobs.spec import AugmentSpec

ASPECT = (3 / 4, 4 / 3)  # the crop's aspect ratio range (torchvision's RandomResizedCrop default)


def augment(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """`x` (B, C, H, W) changed at random, sample by sample; random numbers from `generator`
    (on the CPU), so that a seeded run is the same run."""
    b = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * (high - low) + low).to(x.device)

    if spec.crop < 1:
        area = uniform(spec.crop, 1.0)
        aspect = torch.exp(uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
        sx = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the width and height kept
        sy = torch.sqrt(area / aspect).clamp(max=1.0)
        tx = (uniform(-1.0, 1.0)) * (1 - sx)  # where the kept part lies, inside the image
        ty = (uniform(-1.0, 1.0)) * (1 - sy)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if spec.flip:
        flip = (uniform(0.0, 1.0) < 0.5)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    if spec.jitter > 0:
        brightness = uniform(1 - spec.jitter, 1 + spec.jitter)[:, None, None, None]
        contrast = uniform(1 - spec.jitter, 1 + spec.jitter)[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * brightness
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
