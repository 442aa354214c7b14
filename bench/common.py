"""What several benchmarks need, and only they: the checkout's root on sys.path, and MNIST-like
images made offline (an emulator of their own is `submit.emulator.daemon.isolated`).  (Benchmarks never import tests/.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def digits28(n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): scikit-learn's 8x8 digits blown up to 24x24 (each pixel
    a 3x3 block) at a random place in a 28x28 uint8 image, as MNIST's shape and range."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    big = np.kron(digits.images / 16.0, np.ones((3, 3)))  # (n, 24, 24) in [0, 1]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.integers(0, len(big), size=n)
        out = np.zeros((n, 28, 28), dtype=np.uint8)
        for k, i in enumerate(picks):
            dy, dx = rng.integers(0, 5, size=2)
            out[k, dy:dy + 24, dx:dx + 24] = (big[i] * 255).astype(np.uint8)
        return out, digits.target[picks].astype(np.uint8)

    return (*draw(n_train), *draw(n_test))
