"""The dataset suite's SAC behavior policies and their manifest (package data of offrl)."""
