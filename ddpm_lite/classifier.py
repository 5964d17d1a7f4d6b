"""A noise-aware classifier p_phi(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, Sec. 4).

Classifier guidance (:class:`ddpm_lite.guidance.ClassifierGuidance`) needs the gradient of log p(y | x_t) at every
noise level, so the classifier is trained on noised images: draw t and eps as in Algorithm 1, noise the training
images with q(x_t | x_0), and minimise the cross-entropy of their labels (Dhariwal & Nichol train the U-Net's
encoder this way; here a small CNN with the same time embedding as the book's U-Net).

    classifier = train_noisy_classifier(diffusion, images, labels, steps=1500)   # (N, C, H, W), (N,)
    logits = classifier(x_t, t)                                                   # (B, K)
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ._random import randint
from .diffusion import GaussianDiffusion
from .unet import TimeEmbedding


class NoisyClassifier(nn.Module):
    """logits of p_phi(y | x_t, t): x_t (B, C, H, W), t (B,) -> (B, num_classes).

    Two 3x3 convolutions per resolution (H and H / 2), the time step added to the features as in the U-Net's
    "additive" injection, global average pooling, one linear layer.
    """

    def __init__(self, num_classes: int, image_channels: int = 1, channels: int = 32):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.time_embed = TimeEmbedding(channels, 4 * channels)
        self.time_proj = nn.Linear(4 * channels, channels)
        self.conv1 = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, 2 * channels, 3, padding=1, stride=2)
        self.conv4 = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.norms = nn.ModuleList(nn.GroupNorm(8, c) for c in (channels, channels, 2 * channels, 2 * channels))
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = rearrange(self.time_proj(self.time_embed(t)), "b c -> b c 1 1")  # (B, channels, 1, 1)
        h = F.silu(self.norms[0](self.conv1(x)) + temb)  # (B, channels, H, W)
        h = F.silu(self.norms[1](self.conv2(h)))
        h = F.silu(self.norms[2](self.conv3(h)))  # (B, 2 channels, H / 2, W / 2)
        h = F.silu(self.norms[3](self.conv4(h)))
        return self.head(h.mean(dim=(2, 3)))  # (B, num_classes)


def train_noisy_classifier(diffusion: GaussianDiffusion, images: torch.Tensor, labels: torch.Tensor, *,
                           steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                           device=None) -> NoisyClassifier:
    """Train a :class:`NoisyClassifier` on noised ``images`` (N, C, H, W) in [-1, 1] with class ``labels`` (N,):
    each step draws a batch, t ~ Uniform{0 ... T-1} and eps, and takes an AdamW step on the cross-entropy of
    classifier(q_sample(x_0, t, eps), t). Deterministic for a seed; returns the classifier in eval mode."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.shape != (len(images),):
        raise ValueError(f"labels must be an integer tensor of shape ({len(images)},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = NoisyClassifier(int(labels.max()) + 1, images.shape[1]).to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr)
    images, labels = images.to(device), labels.long().to(device)
    for _ in range(steps):
        index = randint(0, len(images), (batch_size,), generator, device)
        x_start, t = images[index], diffusion.sample_timesteps(batch_size, device, generator=generator)
        x_t = diffusion.q_sample(x_start, t, noise=torch.randn(x_start.shape, generator=generator).to(x_start.device),
                                 validate=False)
        loss = F.cross_entropy(classifier(x_t, t), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier.eval()
