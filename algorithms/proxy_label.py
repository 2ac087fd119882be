"""Semi-supervised offline RL (Zheng et al. 2023): train any algorithm on a dataset of which
only a fraction of trajectories has actions, the rest proxy-labelled by an inverse
dynamics model.

    python algorithms/proxy_label.py --algo td3_bc --dataset offrl/hopper/medium-replay-v0 \\
        --labelled 0.1 --from lowest-return-50% [algorithm options, e.g. --seeds 0,1,2]

1. split the dataset: `--labelled` of its trajectories keep their actions, drawn from
   `--from`; the others become action-free (offrl/data/labels.py);
2. train the IDM on the labelled part and label the rest with its mean actions
   (offrl/model_based/idm.py), writing <dataset>-proxy<P>-v0;
3. train `--algo` on that dataset with the remaining options.
"""

from __future__ import annotations

import argparse

from offrl.data.labels import default_split_ids, split_labels
from offrl.model_based.idm import IDMConfig, proxy_label
from offrl.run.algorithms import algorithm_module
from offrl.run.arguments import positive_int, seed_int
from offrl.run.config import parse_config
from offrl.run.errors import user_errors_as_messages
from offrl.run.train import train_by_name


def proxy_dataset_id(dataset_id: str, labelled_fraction: float) -> str:
    labelled_id, _ = default_split_ids(dataset_id, labelled_fraction)
    return labelled_id.replace("-labelled", "-proxy", 1)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, help="bc, td3_bc, iql, cql, rebrac, ...")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--labelled", type=float, default=0.1)
    parser.add_argument("--from", dest="selection", default="lowest-return-50%")
    parser.add_argument("--split-seed", type=seed_int, default=0)
    parser.add_argument("--idm-steps", type=positive_int, default=IDMConfig.max_steps)
    parser.add_argument("--idm-ensemble", type=positive_int, default=1)
    parser.add_argument("--idm-batch-size", type=positive_int, default=IDMConfig.batch_size)
    args, algorithm_args = parser.parse_known_args(argv)

    with user_errors_as_messages(enabled=argv is None):
        # an unknown algorithm or a bad option of it fails now, not once the IDM has trained
        module = algorithm_module(args.algo)
        proxy_id = proxy_dataset_id(args.dataset, args.labelled)
        training_args = ["--dataset", proxy_id, *algorithm_args]
        parse_config(module.Config, args.algo, training_args)
        idm_config = IDMConfig(max_steps=args.idm_steps, ensemble=args.idm_ensemble, batch_size=args.idm_batch_size,
                               seed=args.split_seed)
        split = split_labels(args.dataset, args.labelled, args.selection, args.split_seed, overwrite=True)
        labelled = proxy_label(split.labelled_id, split.unlabelled_id, proxy_id, idm_config, overwrite=True)
        print(f"{labelled.dataset_id}: {labelled.labelled_steps:,} logged + {labelled.proxy_steps:,} proxy actions; "
              f"IDM validation action MSE {labelled.report.validation_action_mse:.4f}")
        return train_by_name(args.algo, training_args)


if __name__ == "__main__":
    main()
