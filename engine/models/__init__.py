"""Model adapters: the bundled demo model and diffusers video pipelines (Wan 2.1)."""
