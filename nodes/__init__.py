"""nodeflow's built-in node packs, registered through the ``nodeflow.nodes`` entry point
like any third-party pack."""
