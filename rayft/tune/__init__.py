"""`rayft tune`: Ray Tune sweeps in which every trial is a Ray Train run of the config's stage.

trial.py (what a trial runs), pbt.py (population based training in segments), sweep.py (the
Tuner, resume), results.py (results.csv/json, best_config.yaml, plot, table). The `tune:` section
and its search-space domains are rayft.schema.tune and rayft.schema.search_space.
"""
