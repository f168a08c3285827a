"""A1111's noise: per-image generators, RNG sources GPU / CPU / NV, variation seeds, seed resize, ENSD.

Written by hand because no library reproduces AUTOMATIC1111 v1.10.1's noise recipe (``modules/rng.py``,
``rng_philox.py``); the facts are in ``../shared/A1111-SAMPLING.md`` section 1:

- every image has its own generator seeded with its seed; the initial noise is that generator's first
  draw (or a fresh draw when the seed is resized), so image i of a batch equals a single run of its seed;
- the variation seed (subseed) noise is slerped in at ``subseed_strength``;
- "resize seed from" draws the noise at the source size and pastes it centred into the target-size draw;
- ENSD (``eta_noise_seed_delta``) reseeds every image's generator with ``seed + ENSD`` after the
  initial noise, so it changes only what samplers draw afterwards;
- the "NV" source is a Philox 4x32-10 generator on the CPU (numpy) that imitates CUDA's ``torch.randn``.

Nothing here touches torch's global RNG (A1111 seeds it as a side effect; nothing in Easel reads it).
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torchsde._brownian.brownian_interval as torchsde_interval
from torchsde import BrownianTree

Shape = tuple[int, ...]

_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
# A1111's Box-Muller constants are float32 values; the arithmetic then runs in float64 (numpy promotion).
_U_SCALE = float(np.float32(2.3283064e-10))
_V_SCALE = float(np.float32(2.3283064e-10 * 6.2831855))


def _mulhilo(a: np.ndarray, multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32-bit words of ``a * multiplier`` (a: uint32 array)."""
    product = a.astype(np.uint64) * np.uint64(multiplier)
    return (product >> np.uint64(32)).astype(np.uint32), (product & np.uint64(_MASK32)).astype(np.uint32)


def philox4x32_10(counter: Sequence[np.ndarray], key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox 4x32 with 10 rounds over uint32 counter words (each an array); returns the 4 output words."""
    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint32) for word in counter)
    k0, k1 = key
    for round_index in range(10):
        hi0, lo0 = _mulhilo(c0, _PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, _PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
        if round_index < 9:
            k0 = (k0 + _PHILOX_W0) & _MASK32
            k1 = (k1 + _PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


class PhiloxGenerator:
    """A1111's "NV" generator: normal samples close to ``torch.randn(device="cuda")`` on any device.

    Each ``randn`` call uses counter ``(offset, 0, j, 0)`` for element j and then advances ``offset`` by one;
    the key is the 64-bit seed split into two 32-bit words. Box-Muller keeps the first value only.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        """The next ``shape`` normal samples (float32, row-major)."""
        count = int(np.prod(shape, dtype=np.int64))
        zeros = np.zeros(count, dtype=np.uint32)
        offsets = np.full(count, self.offset & _MASK32, dtype=np.uint32)
        counter = (offsets, zeros, np.arange(count, dtype=np.uint32), zeros)
        self.offset += 1
        g0, g1, _, _ = philox4x32_10(counter, (self.seed & _MASK32, self.seed >> 32))
        u = g0.astype(np.float64) * _U_SCALE + _U_SCALE / 2
        v = g1.astype(np.float64) * _V_SCALE + _V_SCALE / 2
        return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(tuple(shape))


class RandnSource(enum.StrEnum):
    """A1111's setting ``randn_source`` (infotext ``RNG``)."""

    GPU = "GPU"
    CPU = "CPU"
    NV = "NV"


Generator = torch.Generator | PhiloxGenerator


@dataclass(frozen=True)
class NoiseSource:
    """Where normal samples come from: A1111's ``randn_source`` on the model's ``device``.

    GPU draws with a ``torch.Generator`` on ``device`` (on a CPU-only machine that is the CPU generator;
    on ``mps`` A1111 falls back to the CPU); CPU draws on the CPU and moves the result to ``device``;
    NV draws with :class:`PhiloxGenerator`. Every draw is float32.
    """

    source: RandnSource = RandnSource.GPU
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def draw_device(self) -> torch.device:
        """The device the torch generators live on."""
        if self.source == RandnSource.CPU or self.device.type == "mps":
            return torch.device("cpu")
        return self.device

    def infotext(self) -> dict[str, str]:
        """A1111 writes ``RNG`` only when the source is not the default GPU."""
        return {} if self.source == RandnSource.GPU else {"RNG": self.source.value}

    def generator(self, seed: int) -> Generator:
        """A new generator seeded with ``seed`` (A1111's ``create_generator``)."""
        if self.source == RandnSource.NV:
            return PhiloxGenerator(seed)
        return torch.Generator(self.draw_device).manual_seed(int(seed))

    def randn(self, generator: Generator, shape: Sequence[int]) -> torch.Tensor:
        """The next draw of ``generator`` (A1111's ``randn_without_seed``), on ``device``."""
        if isinstance(generator, PhiloxGenerator):
            return torch.asarray(generator.randn(shape), device=self.device)
        drawn = torch.randn(tuple(shape), device=self.draw_device, generator=generator)
        return drawn.to(self.device)

    def randn_seeded(self, seed: int, shape: Sequence[int]) -> torch.Tensor:
        """The first draw of a fresh generator seeded with ``seed`` (A1111's ``randn`` and ``randn_local``)."""
        return self.randn(self.generator(seed), shape)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend of two (C, H, W) noises: norms and dots over dim 1 (H).

    ``val`` 0 gives ``low``, 1 gives ``high``. When the two are nearly parallel A1111 falls back to a
    linear mix whose weights are swapped (``low * val + high * (1 - val)``); that is kept on purpose.
    """
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


def paste_centred(target: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Paste ``noise`` (C, h, w) centred into ``target`` (C, H, W) in place; a bigger noise is centre-cropped."""
    dx = (target.shape[2] - noise.shape[2]) // 2
    dy = (target.shape[1] - noise.shape[1]) // 2
    width = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    height = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
    target[:, ty : ty + height, tx : tx + width] = noise[:, sy : sy + height, sx : sx + width]
    return target


def image_seeds(seed: int, subseed: int, subseed_strength: float, count: int) -> tuple[list[int], list[int]]:
    """A1111's ``all_seeds`` / ``all_subseeds`` for ``count`` images (n_iter * batch_size).

    Images count up from ``seed``; with a variation strength every image keeps ``seed`` and only the
    subseeds count up. (Resolving -1 to a random seed is the caller's business.)
    """
    seeds = [int(seed) + (index if subseed_strength == 0 else 0) for index in range(count)]
    return seeds, [int(subseed) + index for index in range(count)]


class ImageRNG:
    """The noise of one batch, one generator per image (A1111's ``ImageRNG``).

    ``shape`` is one image's latent shape (C, H/8, W/8). The first :meth:`next` returns the initial noise
    (with variation seed and seed resize); each later call returns every image's next draw from its own
    generator (the samplers' ``randn_like``), reseeded with ``seed + eta_noise_seed_delta`` after the
    initial noise when ENSD is non-zero.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        source: NoiseSource | None = None,
        eta_noise_seed_delta: int = 0,
    ) -> None:
        self.shape: Shape = tuple(int(size) for size in shape)
        self.seeds = [int(seed) for seed in seeds]
        self.subseeds = None if subseeds is None else [int(seed) for seed in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h)
        self.seed_resize_from_w = int(seed_resize_from_w)
        self.source = source or NoiseSource()
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.generators: list[Generator] = [self.source.generator(seed) for seed in self.seeds]
        self.is_first = True

    @property
    def noise_shape(self) -> Shape:
        """The shape the seed noise is drawn at: the resize-from size when both sides are set."""
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def _subseed(self, index: int) -> int | None:
        if self.subseeds is None or self.subseed_strength == 0:
            return None
        return 0 if index >= len(self.subseeds) else self.subseeds[index]

    def _image_noise(self, index: int) -> torch.Tensor:
        seed, generator, noise_shape = self.seeds[index], self.generators[index], self.noise_shape
        subseed = self._subseed(index)
        subnoise = None if subseed is None else self.source.randn_seeded(subseed, noise_shape)
        if noise_shape != self.shape:
            noise = self.source.randn_seeded(seed, noise_shape)
        else:
            noise = self.source.randn(generator, self.shape)
        if subnoise is not None:
            noise = slerp(self.subseed_strength, noise, subnoise)
        if noise_shape != self.shape:
            # A1111 draws the target-size noise from the image's generator too (its first draw).
            noise = paste_centred(self.source.randn(generator, self.shape), noise)
        return noise

    def first(self) -> torch.Tensor:
        """The initial noise (B, C, H, W); afterwards applies ENSD to the generators."""
        noises = [self._image_noise(index) for index in range(len(self.seeds))]
        if self.eta_noise_seed_delta:
            self.generators = [self.source.generator(seed + self.eta_noise_seed_delta) for seed in self.seeds]
        self.is_first = False
        return torch.stack(noises).to(self.source.device)

    def next(self) -> torch.Tensor:
        """The initial noise on the first call, then every image's next draw (B, C, H, W)."""
        if self.is_first:
            return self.first()
        noises = [self.source.randn(generator, self.shape) for generator in self.generators]
        return torch.stack(noises).to(self.source.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """What A1111's samplers get for ``torch.randn_like(x)``: :meth:`next` (``x`` only names the call)."""
        del x
        return self.next()


# torchsde draws a Brownian tree's node noise through the module function ``_randn(size, dtype, device,
# seed)``; A1111 replaces it for good so the tree follows the RNG source. Easel swaps it only while a tree
# of its own draws (torchsde has no hook for this), under a lock so concurrent jobs cannot interleave.
_TORCHSDE_RANDN_LOCK = threading.RLock()


@contextlib.contextmanager
def torchsde_noise_from(source: NoiseSource) -> Iterator[None]:
    """Make torchsde's Brownian trees draw node noise from ``source`` inside the block; restored after."""

    def randn(size: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
        return source.randn_seeded(int(seed), size).to(device=device, dtype=dtype)

    with _TORCHSDE_RANDN_LOCK:
        original = torchsde_interval._randn
        torchsde_interval._randn = randn
        try:
            yield
        finally:
            torchsde_interval._randn = original


class BrownianTreeNoiseSampler:
    """Noise for the SDE samplers: one ``torchsde.BrownianTree`` per image, seeded with that image's seed.

    Reproduces k-diffusion's ``BrownianTreeNoiseSampler`` as A1111 builds it (``sigma_min`` = smallest
    non-zero sigma of the full schedule, ``sigma_max`` = the largest, entropy = each image's seed, node
    noise from the RNG source). A call returns ``(W(t1) - W(t0)) / sqrt|t1 - t0|`` for every image.
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: torch.Tensor | float,
        sigma_max: torch.Tensor | float,
        seeds: Sequence[int],
        source: NoiseSource | None = None,
    ) -> None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"one seed per image is needed: {len(seeds)} seeds for a batch of {x.shape[0]}")
        self.source = source or NoiseSource(device=x.device)
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.t0, self.t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w0 = torch.zeros_like(x)[0]
        with torchsde_noise_from(self.source):
            self.trees = [BrownianTree(self.t0, w0, self.t1, entropy=int(seed)) for seed in seeds]

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        """Unit-variance Brownian increment between ``sigma`` and ``sigma_next`` (B, C, H, W)."""
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        with torchsde_noise_from(self.source):
            increments = torch.stack([tree(low, high) for tree in self.trees]) * (self.sign * sign)
        return increments / (t1 - t0).abs().sqrt()


def brownian_noise_sampler(
    x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int], source: NoiseSource | None = None
) -> BrownianTreeNoiseSampler:
    """A1111's ``create_noise_sampler``: the tree spans the full schedule's non-zero sigmas (even in img2img)."""
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seeds, source)
