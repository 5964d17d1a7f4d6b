import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as the default dtype (exact identities), restoring the default afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def one_thread():
    """Run a test on one thread: tiny models are fastest, and reproducible, so when processes share the cores.

    Restores the setting afterwards, so other test modules are unaffected.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
