"""The fast teacher: static KV cache, CUDA-graph decode steps and continuous batching (``teacher=fast``).

:class:`FastTeacher` (teacher.py) has the teacher contract; the engine (engine.py) drives the slot
decoder (model.py) with per-row state (state.py), device-side sampling (sampling.py) and captured
CUDA graphs (graphs.py).
"""

from generators.teachers.fast.teacher import FastTeacher

__all__ = ["FastTeacher"]
