"""offrl's algorithms, one file each, installed as `offrl.algorithms`; configs/ holds their
per-environment and per-dataset settings."""
