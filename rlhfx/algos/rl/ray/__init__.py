"""`--ray_address`: online RL with its roles (actor group, reference, reward models, rollout engines) as Ray actors
on placement groups, OpenRLHF's placement flags (placement.py), the actors (workers.py, cluster.py) and the driver's
loop (trainer.py). Ray is imported only when a run asks for it: `pip install 'rlhfx[ray]'`."""
