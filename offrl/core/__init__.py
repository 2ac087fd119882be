"""The learner core: the `Algorithm` interface, the compiled multi-seed training program,
networks, RL math shared by the algorithms, and the on-device replay buffer. Imports jax,
never the run machinery."""
