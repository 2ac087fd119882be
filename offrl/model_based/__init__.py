"""Learned models of an environment: the dynamics ensemble and its model rollouts (RAVL,
MOREC), MOREC's dynamics reward, the true simulator in a model's place, and the inverse
dynamics model of proxy labelling."""
