"""Running an algorithm: configs, the offline training stages and the online phase,
checkpoints, run directories, logging and evaluation."""
