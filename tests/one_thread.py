"""A module-wide fixture: torch on one thread (steps of a few tiny networks run faster on one thread than on two
of a shared 2-core machine). Import it into a test module to apply it there: ``from one_thread import one_thread``."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
