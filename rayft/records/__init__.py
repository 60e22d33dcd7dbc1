"""Run records: the run directory, verified checkpoints, attempts, progress, metric tracking,
plots, and read-only listings of runs and sweeps."""
