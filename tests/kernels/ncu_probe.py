"""One launch each of our Triton forward (dense, S=32760) and the mass kernel, for Nsight Compute.

ncu --kernel-name regex:'_sparse_fwd|_mass' --launch-skip 1 --launch-count 2 --section SpeedOfLight \\
    --section ComputeWorkloadAnalysis --section WarpStateStats python3 tests/kernels/ncu_probe.py
"""

import torch

from calibstudio.kernels.layout import BlockLayout
from calibstudio.kernels.mass import triton_block_mass
from calibstudio.kernels.triton_fwd import triton_sparse_attention

S, H, D = 32760, 40, 128
q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
lay = BlockLayout.dense(H, S, device="cuda")
for _ in range(2):
    _, lse = triton_sparse_attention(q, k, v, lay, return_lse=True)
    triton_block_mass(q, k, lse)
torch.cuda.synchronize()
