"""The bundled demo text-to-video model: procedural clips, captions, prompt-adherence checking.

``scenes``: the numpy clip generator (a Scene is the ground truth; default clip size and token grid);
``captions``: the caption grammar, its parser, the held-out split; ``adherence``: the checker that
scores a clip's colour, shape and motion against its caption.
"""
