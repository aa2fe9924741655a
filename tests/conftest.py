import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _run_unblur(*args):
    """``python -m unblur ARGS`` as a user runs it: the completed process, output captured."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "unblur", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def unblur_cli():
    return _run_unblur
