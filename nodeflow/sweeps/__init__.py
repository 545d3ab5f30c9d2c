"""Sweeps: one graph run many times over a grid (or zipped lists) of input values.

`nodeflow.sweeps.spec.parse_sweeps` turns ``--sweep`` specifications into jobs,
`nodeflow.sweeps.runner.run_local` runs them on one shared executor, and
`nodeflow.cluster.driver.run_on_ray` spreads them over a Ray cluster; both name outputs
by job and keep a manifest (`nodeflow.sweeps.store`) so a re-run resumes where one stopped.
Nothing is imported here, so the command line can read the options cheaply.
"""
