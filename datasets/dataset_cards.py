"""Write the dataset-card tables of datasets/README.md from the local suite datasets.

    python datasets/dataset_cards.py

Reads the policy manifest and every generated `offrl/<env>/<kind>-v0` dataset in the local
Minari store, and replaces the text between the CARDS markers in datasets/README.md.
A dataset missing from the local store keeps the row it already has (measured when it was
generated, by an earlier run of this script) or is listed as not generated: never guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

from offrl.data import load_dataset
from offrl.data.store import dataset_path
from offrl.data.suite import KINDS, read_manifest, suite_id

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- CARDS:BEGIN -->", "<!-- CARDS:END -->"


def policy_table() -> list[str]:
    lines = ["| env | policy | SAC env steps | mean return (100 episodes, sampled actions) |", "|---|---|---|---|"]
    for name, env in read_manifest().items():
        lines.append(f"| {env.env_id} | uniform random | – | {env.random_return:.1f} |")
        for policy in [*env.ladder, env.medium, env.expert]:
            lines.append(f"| {env.env_id} | {policy.name} | {policy.training_steps:,} | {policy.mean_return:.1f} |")
    return lines


def existing_rows(text: str) -> dict[str, str]:
    """The README's current dataset rows by dataset id, for those that were measured."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 2 and cells[1].startswith("offrl/") and cells[2] != "not generated here":
            rows[cells[1]] = line
    return rows


def dataset_table(previous: dict[str, str]) -> list[str]:
    lines = ["| dataset | made from | episodes (complete) | steps | terminals | mean return | normalized | "
             "generation steps/s |", "|---|---|---|---|---|---|---|---|"]
    for name in read_manifest():
        for kind in KINDS:
            dataset_id = suite_id(name, kind)
            if not dataset_path(dataset_id).exists():
                lines.append(previous.get(dataset_id, f"| {dataset_id} | not generated here | | | | | | |"))
                continue
            dataset = load_dataset(dataset_id)
            summary, extra = dataset.summary(), dataset.metadata.extra
            made_from = ", ".join(f"{s['policy']} {s['steps']:,}" for s in extra["segments"])
            lines.append(
                f"| {dataset_id} | {made_from} | {summary['episodes']:,} ({summary['complete_episodes']:,}) | "
                f"{summary['steps']:,} | "
                f"{summary['terminals']:,} | {summary['return_mean']:.1f} | "
                f"{summary['normalized_return_mean']:.1f} | {extra['generation_steps_per_s']:,.0f} |")
    return lines


def main() -> None:
    text = README.read_text()
    body = "\n".join(["### Behavior policies", "", *policy_table(), "", "### Datasets", "",
                      *dataset_table(existing_rows(text))])
    text = re.sub(re.escape(BEGIN) + ".*" + re.escape(END), f"{BEGIN}\n{body}\n{END}", text, flags=re.S)
    README.write_text(text)
    print(body)


if __name__ == "__main__":
    main()
