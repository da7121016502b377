"""Suite-wide settings.

One intra-op thread: the suite's tensors are small, and on a 2-core machine running other work,
PyTorch's spinning worker threads make small ops up to 100x slower (measured here).
"""

import torch

torch.set_num_threads(1)
