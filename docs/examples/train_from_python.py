"""Train, score and use policies from Python: the example of docs/python_api.md.

    python docs/examples/train_from_python.py [DATASET_ID] [NUM_UPDATES]

The dataset must be in the local Minari store (`offrl datasets list`); the default is
Minari's own mujoco/hopper/medium-v0 (fetch it once with
`offrl datasets info mujoco/hopper/medium-v0 --download`).
"""

import sys

import minari

import offrl

dataset = sys.argv[1] if len(sys.argv) > 1 else "mujoco/hopper/medium-v0"
num_updates = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000

# the same settings as on the command line, as keyword arguments; all seeds train in one program
run = offrl.train("td3_bc", dataset, seeds=[0, 1], num_updates=num_updates, eval_every=num_updates, wandb="disabled")
print("run directory:", run.run_dir)
print("score of each seed at the last evaluation:", run.scores)

# a trained policy is a plain function from env observations to env actions
act = run.policy(seed=1)
env = minari.load_dataset(dataset).recover_environment(eval_env=True)  # offrl's datasets carry their env
observation, _ = env.reset(seed=0)
episode_return, done = 0.0, False
while not done:
    observation, reward, terminated, truncated, _ = env.step(act(observation))
    episode_return += float(reward)
    done = terminated or truncated
print(f"seed 1, one episode: return {episode_return:.1f}")

# a run is found again by its directory, e.g. in another session
again = offrl.load_run(run.run_dir)
results = again.evaluate(episodes=5)
print("5 more episodes per seed, mean return:", results["eval/return"])
