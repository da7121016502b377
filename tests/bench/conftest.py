import pytest

from wibergian.bench import fused


@pytest.fixture(autouse=True)
def _eager_kernels():
    """Bench tests run the eager kernels unless a test turns compilation on itself (compiling
    costs seconds per kernel on a fresh machine)."""
    fused.configure(False)
    yield
    fused.configure(False)
