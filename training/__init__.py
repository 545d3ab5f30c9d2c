"""How nodeflow's demo models are made: run from a source checkout, never installed.

A procedural "world" of simple coloured shapes (:mod:`training.world`), a tiny
CLIP-compatible tokenizer for its words (:mod:`training.tokenizer`), the
scripts that train small diffusers-format models on it (``train_*``, sharing
one step loop, :mod:`training.loop`) and the judges of their pictures
(:mod:`training.evaluate`, :mod:`training.control_eval`).  The weights they
write ship inside the engine as package data under ``nodeflow/demo/models``;
this code does not::

    python -m training.train_vae --minutes 10 --threads 2
"""
