"""Running sweeps on a Ray cluster (``nodeflow run --ray``; needs ``pip install 'nodeflow[ray]'``).

`nodeflow.cluster.driver.run_on_ray` starts long-lived `nodeflow.cluster.worker.NodeflowWorker`
actors and hands them jobs with the model-affinity `nodeflow.cluster.scheduler.JobScheduler`.
Ray is imported only when a sweep actually runs on it.
"""
