"""The bundled demo text-to-video model: procedural clips, captions, prompt-adherence checking."""
