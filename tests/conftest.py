"""Fixtures shared by the test files."""
import os

import pytest
import torch

# Without a GPU, Triton kernels (lyabook.triton_qr) run in Triton's interpreter, so that the CPU
# suite tests their arithmetic; the variable must be set before the kernels are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def fake_mnist(monkeypatch):
    """Random 'digits' in place of MNIST for the sweeps (`lyabook.sweeps._mnist`): the tests check
    sharding and errors, not learning. 256 training and 64 test images, the smoke profile's."""
    from lyabook import sweeps

    g = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (256, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (256,), generator=g))
    test = (torch.randint(0, 256, (64, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (64,), generator=g))
    monkeypatch.setattr(sweeps, "_mnist", lambda data_dir, profile, allow_fallback=False: (train, test))
