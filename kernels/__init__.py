"""Block-sparse attention kernels and block layouts (torch + triton); knows nothing of diffusers."""
