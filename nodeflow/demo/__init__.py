"""nodeflow's own demo model family.

A procedural "world" of simple coloured shapes (:mod:`nodeflow.demo.world`), a
tiny CLIP-compatible tokenizer for its words (:mod:`nodeflow.demo.tokenizer`)
and training scripts that produce small diffusers-format models from it, so a
first run of nodeflow makes a real picture without downloading anything.
"""
