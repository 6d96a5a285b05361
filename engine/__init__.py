"""The engine: profiles, the engine protocol, calibration and sparse generation.

``profile`` and ``protocol`` are torch-free (stdlib, numpy, safetensors) so the studio can use them.
"""
