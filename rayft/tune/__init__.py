"""`rayft tune`: Ray Tune sweeps in which every trial is a Ray Train run of the config's stage.

config.py (the `tune:` section), space.py (domains and checks), trial.py (what a trial runs),
sweep.py (the Tuner, resume), results.py (results.csv/json, best_config.yaml, plot, table).
"""
