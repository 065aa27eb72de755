"""The one `robopolicy` command; each subcommand parses, builds and calls library code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from robopolicy.datasets.errors import DataError


def _print_info(info: dict) -> None:
    length = info["episode_length"]
    print(f"{info['path']}  (zarr v{info['zarr_format']})")
    print(f"episodes {info['episodes']}  steps {info['steps']}  "
          f"episode length min/median/max {length['min']}/{length['median']:g}/{length['max']}  "
          f"fps {info['fps'] if info['fps'] is not None else 'not recorded'}")
    width = max((len(k) for k in info["keys"]), default=3)
    for key, meta in info["keys"].items():
        stamps = "  timestamps" if meta["timestamps"] else ""
        print(f"  {key:<{width}}  {str(tuple(meta['shape'])):<22} {meta['dtype']:<8} chunks {tuple(meta['chunks'])}"
              f"  {meta['codec']}{stamps}")


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from robopolicy.datasets.inspect import describe
    from robopolicy.datasets.store import EpisodeStore

    info = describe(EpisodeStore.open(args.path))
    print(json.dumps(info, indent=2)) if args.json else _print_info(info)
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from robopolicy.datasets.inspect import validate
    from robopolicy.datasets.store import EpisodeStore

    store = EpisodeStore.open(args.path)
    findings = validate(store)
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    print(f"{args.path}: {store.n_episodes} episodes, {store.n_steps} steps, "
          f"{errors} errors, {len(findings) - errors} warnings")
    return 1 if errors else 0


def cmd_train(args: argparse.Namespace) -> int:
    from robopolicy.training.run import train

    metrics = train(args.overrides)
    print(json.dumps(metrics))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from robopolicy.quickstart import run_quickstart

    summary = run_quickstart(Path(args.out), n_episodes=args.episodes, steps=args.steps)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robopolicy", description="Robot imitation learning toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="inspect and check episode stores")
    dataset_cmds = dataset.add_subparsers(dest="dataset_command", required=True)
    info = dataset_cmds.add_parser("info", help="episodes, steps, keys, codecs, episode lengths, fps")
    info.add_argument("path", help="store directory, .zarr.zip or fsspec URL")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_dataset_info)
    check = dataset_cmds.add_parser("validate", help="full scan for problems; exit code 1 on errors")
    check.add_argument("path", help="store directory, .zarr.zip or fsspec URL")
    check.set_defaults(func=cmd_dataset_validate)

    train = commands.add_parser("train", help="train a policy: robopolicy train task=pusht_image policy=diffusion_unet")
    train.add_argument("overrides", nargs="*", help="hydra overrides, e.g. policy=flow training.max_steps=2000")
    train.set_defaults(func=cmd_train)

    quick = commands.add_parser("quickstart", help="the README's main job on data it records itself")
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    quick.add_argument("--episodes", type=int, default=8)
    quick.add_argument("--steps", type=int, default=100)
    quick.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `robopolicy` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
