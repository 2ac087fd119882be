"""What users run around training: the `offrl` command, sweeps, reports, the dataset suite
and `make train`'s main job."""
