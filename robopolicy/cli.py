"""The one `robopolicy` command; each subcommand parses, builds and calls library code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from robopolicy.datasets.errors import DataError


def _print_info(info: dict) -> None:
    length = info["episode_length"]
    print(f"{info['path']}  (zarr v{info['zarr_format']})")
    print(f"episodes {info['episodes']}  steps {info['steps']}  "
          f"episode length min/median/max {length['min']}/{length['median']:g}/{length['max']}  "
          f"fps {info['fps'] if info['fps'] is not None else 'not recorded'}")
    if info.get("tasks"):
        tasks = info["tasks"]
        print(f"tasks {tasks['distinct']} distinct, named for {tasks['episodes']} of {info['episodes']} episodes")
    width = max((len(k) for k in info["keys"]), default=3)
    for key, meta in info["keys"].items():
        stamps = "  timestamps" if meta["timestamps"] else ""
        print(f"  {key:<{width}}  {str(tuple(meta['shape'])):<22} {meta['dtype']:<8} chunks {tuple(meta['chunks'])}"
              f"  {meta['codec']}{stamps}")


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from robopolicy.datasets.inspect import describe
    from robopolicy.datasets.store import EpisodeStore
    from robopolicy.settings import parse_overrides

    if args.task is not None:
        from robopolicy.training.config import compose_config, task_yaml

        unknown = sorted(set(parse_overrides(args.task)) - {"obs", "action"})
        if unknown:
            raise ValueError(f"dataset info --task takes obs=[...] and action=KEY, not {unknown}")
        print(task_yaml(compose_config([f"data={args.path}", *args.task])["task"]), end="")
        return 0
    info = describe(EpisodeStore.open(args.path))
    print(json.dumps(info, indent=2)) if args.json else _print_info(info)
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from robopolicy.datasets.inspect import validate
    from robopolicy.datasets.store import EpisodeStore

    store = EpisodeStore.open(args.path)
    findings = validate(store, deep=args.deep)
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    print(f"{args.path}: {store.n_episodes} episodes, {store.n_steps} steps, "
          f"{errors} errors, {len(findings) - errors} warnings")
    return 1 if errors else 0


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from robopolicy.datasets.convert.formats import open_source
    from robopolicy.datasets.convert.run import convert_source
    from robopolicy.settings import parse_overrides

    options = parse_overrides(args.options)
    store = {"overwrite": bool(options.pop("overwrite", False)), "zarr_format": int(options.pop("zarr_format", 3)),
             "image_codec": options.pop("image_codec", None), "image_quality": options.pop("image_quality", None),
             "fps": options.pop("fps", None)}  # the options every format takes; the rest are the format's own
    summary = convert_source(open_source(args.source_format, args.src, options), args.out, **store)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from robopolicy.robots.record import record

    print(json.dumps(record(args.options), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robopolicy.training.run import train

    metrics = train(args.overrides)
    print(json.dumps(metrics))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from robopolicy.training.distill import distill

    metrics = distill(args.teacher, args.overrides)
    print(json.dumps(metrics))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from robopolicy.deploy.artifact_policy import evaluate

    summary = evaluate(args.checkpoint, args.overrides)
    shown = ("checkpoint", *(("instruction",) if summary.get("instruction") else ()), "success_rate",
             "success_rate_ci95", "mean_score", "mean_score_ci95", "mean_episode_length", "policy_call_ms", "eval_json",
             "videos")
    if "suite" in summary:
        shown = ("checkpoint", "suite", "suites", "success_rate", "suite_json", "suite_md")
    if summary.get("mode") == "offline":
        shown = ("checkpoint", "data", "n_episodes", "held_out", "n_windows", "mse", "mae", "normalized_mse",
                 "executed_mse", "executed_normalized_mse", "eval_json", "plots")
    print(json.dumps({k: summary[k] for k in shown}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from robopolicy.deploy.predict import predict_recorded

    print(json.dumps(predict_recorded(args.path, args.options)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from robopolicy.deploy.export import export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.options)
    print(json.dumps({k: meta[k] for k in ("artifact", "format", "file", "policy", "sampling", "control_hz", "horizon",
                                           "n_action_steps", "parity_error")}, indent=2))
    return 0


def cmd_reactive(args: argparse.Namespace) -> int:
    from robopolicy.deploy.reactive import fit_reactive

    meta = fit_reactive(args.checkpoint, args.options)
    print(json.dumps({k: meta[k] for k in ("keys", "horizon", "errors")}, indent=2))
    return 0


def cmd_robot_calibrate(args: argparse.Namespace) -> int:
    from robopolicy.robots.calibrate import calibrate

    print(json.dumps(calibrate(args.options), indent=2))
    return 0


def cmd_robot_sim_driver(args: argparse.Namespace) -> int:
    from robopolicy.ros.sim_driver import run_sim_driver

    results = run_sim_driver(args.options)
    print(json.dumps({k: results[k] for k in ("success_rate", "success_rate_ci95", "results") if k in results},
                     indent=2))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from robopolicy.deploy.session import deploy

    results = deploy(args.artifact, args.options)
    print(json.dumps({k: results[k] for k in ("artifact", "episodes", "success_rate", "success_rate_ci95",
                                              "results", "run_log") if k in results}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from robopolicy.runtime.serve import KeygenConfig, ServeConfig, keygen, serve
    from robopolicy.settings import build_settings, parse_overrides

    if args.artifact == "keygen" and not Path(args.artifact).exists():
        print(json.dumps(keygen(build_settings(KeygenConfig, parse_overrides(args.options), "serve keygen").out),
                         indent=2))
        return 0
    serve(args.artifact, build_settings(ServeConfig, parse_overrides(args.options), "serve"))
    return 0


DEMO_OPTIONS = {"env": "lift", "obs": None, "task": None, "n": 100, "out": None, "seed": 0, "keep_failed": False,
                "max_attempts": None, "resume": False, "overwrite": False}
SIM_HELP = "env.name=robosuite|pusht|metaworld env.<key>=... jitter=0.0 sensors.<sensor>=[keys]"
LATENCY_HELP = "latency.<sensor>=SECONDS actuation_latency=0.0"


def _eval_help() -> str:
    from robopolicy.envs.evaluate import CHECKPOINT_OPTIONS
    from robopolicy.envs.offline import OfflineEvalConfig
    from robopolicy.envs.runner import EvalConfig
    from robopolicy.settings import options_help

    shown = {"out": "DIR", "use_ema": "true", "device": "cpu|cuda", "threads": "N", "sampler": "ddim|ddpm|dpmsolver++",
             "num_inference_steps": "N"}
    checkpoint = " ".join(f"{k}={shown.get(k, '...')}" for k in CHECKPOINT_OPTIONS)
    offline = options_help(OfflineEvalConfig, skip=("out",), offline="true|false", data="STORE",
                           episodes="[i,...]")
    return (f"in the simulator: {options_help(EvalConfig, n_envs='<one per CPU core>')} env.<key>=value; offline "
            f"(the default without a simulator): {offline}; {checkpoint} (an artifact takes out and threads only)")


def _predict_help() -> str:
    from robopolicy.deploy.predict import PredictConfig
    from robopolicy.settings import options_help

    return options_help(PredictConfig, data="STORE", out="FILE.npz", device="cpu|cuda")


def _export_help() -> str:
    from robopolicy.deploy.export import ExportConfig
    from robopolicy.settings import options_help

    return options_help(ExportConfig, out="DIR(required)", format="onnx|torchscript|auto",
                        sampler="ddim|dpmsolver++")


def _deploy_help() -> str:
    from robopolicy.ros.node import BridgeConfig
    from robopolicy.runtime.loop import RuntimeConfig
    from robopolicy.runtime.safety import SafetyConfig
    from robopolicy.settings import options_help

    runtime = options_help(RuntimeConfig, skip=("sensor_latency", "actuation_latency", "safety", "interpolation"),
                           inference="async|sync", blending="replace|crossfade|ensemble|inpaint")
    safety = " ".join(f"safety.{item}" for item in options_help(SafetyConfig).split())
    return (f"robot=sim|ros out=DIR max_seconds=3600 threads=N {LATENCY_HELP}; runtime: {runtime} "
            f"interpolation.<key>=nearest|linear|slerp {safety}; robot=sim: episodes=20 seed_start=100000 {SIM_HELP}; "
            f"robot=ros: robot.<key> for {options_help(BridgeConfig, map='NAME|PATH(required)', ros='1|2')}")


def _reactive_help() -> str:
    from robopolicy.deploy.reactive import ReactiveConfig
    from robopolicy.settings import options_help

    return options_help(ReactiveConfig, artifact="DIR(required)", keys="[low-dim obs keys]")


def _record_help() -> str:
    from robopolicy.robots.record import RecordConfig
    from robopolicy.settings import options_help

    return (f"{options_help(RecordConfig, robot='sim|ros', teleop='scripted|keyboard|spacemouse', out='DIR')} "
            f"teleop_options.<key>=... {LATENCY_HELP}; robot=sim: {SIM_HELP}; robot=ros: robot.map=NAME|PATH")


def _calibrate_help() -> str:
    from robopolicy.robots.calibrate import CalibrationConfig
    from robopolicy.settings import options_help

    return f"{SIM_HELP} {LATENCY_HELP} {options_help(CalibrationConfig)}"


def _sim_driver_help() -> str:
    from robopolicy.ros.sim_driver import DriverConfig
    from robopolicy.settings import options_help

    return f"{options_help(DriverConfig)} {SIM_HELP.replace(' sensors.<sensor>=[keys]', '')} {LATENCY_HELP}"


def _serve_help() -> str:
    from robopolicy.runtime.serve import KeygenConfig, ServeConfig
    from robopolicy.settings import options_help

    return (f"{options_help(ServeConfig)} (host=0.0.0.0 accepts other machines: with keys=DIR from "
            f"`robopolicy serve keygen {options_help(KeygenConfig)}`, or insecure=true)")


def _convert_help() -> str:
    from robopolicy.datasets.convert.formats import FORMAT_OPTIONS

    return ("overwrite=false zarr_format=3 fps=HZ (the recording rate; wins over the source's) "
            "image_codec=blosc|none|jpegxl|jpeg image_quality=90 (default blosc, lossless; jpeg 90 where every "
            "frame comes from lossy video: lerobot videos, video); "
            + "; ".join(f"{name}: {' '.join(f'{k}={v}' for k, v in keys.items())}"
                        for name, keys in FORMAT_OPTIONS.items()))


# verb -> its option list, generated from the dataclasses that check the options; computed only for --help, so that
# running a verb imports nothing it does not use (`deploy tcp://...` on a robot computer without torch)
OPTION_HELP = {"eval": _eval_help, "export": _export_help, "deploy": _deploy_help, "record": _record_help,
               "robot calibrate": _calibrate_help, "robot sim-driver": _sim_driver_help, "serve": _serve_help,
               "dataset convert": _convert_help, "predict": _predict_help, "reactive": _reactive_help}


def cmd_demos_generate(args: argparse.Namespace) -> int:
    from robopolicy.envs.demos import default_demo_path, demo_env_config, generate_demos
    from robopolicy.settings import parse_overrides

    options = parse_overrides(args.options)
    settings = {**DEMO_OPTIONS, **{k: v for k, v in options.items() if k in DEMO_OPTIONS}}
    env_extra = {k: v for k, v in options.items() if k not in DEMO_OPTIONS}  # checked by the env's make_env
    env_cfg = demo_env_config(settings["env"], settings["obs"], settings["task"], env_extra)
    out = settings["out"] or default_demo_path(env_cfg, settings["env"], settings["obs"])
    summary = generate_demos(env_cfg, out, int(settings["n"]), seed_start=int(settings["seed"]),
                             keep_failed=bool(settings["keep_failed"]), max_attempts=settings["max_attempts"],
                             resume=bool(settings["resume"]), overwrite=bool(settings["overwrite"]))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from robopolicy.quickstart import QuickstartConfig, run_quickstart

    settings = QuickstartConfig(args.demos, args.train_steps, args.train_minutes, args.eval_episodes, args.n_envs,
                                args.train_threads)
    summary = run_quickstart(Path(args.out), settings)
    print(json.dumps(summary, indent=2))
    training, wall = summary["training"], summary["wall_s"]
    undertrained = (f"  UNDERTRAINED: the time cap stopped training at step {training['steps']} of "
                    f"{training['planned_steps']}" if summary["undertrained"] else "")
    print(f"\nLift success rate {summary['success_rate']:.2f} over {len(summary['eval_seeds'])} seeds "
          f"(95% CI {summary['success_rate_ci95'][0]:.2f}-{summary['success_rate_ci95'][1]:.2f}){undertrained}\n"
          f"training   {training['steps']} of {training['planned_steps']} steps\n"
          f"wall time  demos {wall['demos']:.0f} s, training {wall['train']:.0f} s, evaluation {wall['eval']:.0f} s\n"
          f"checkpoint {summary['training']['checkpoint']}\nvideos     {' '.join(summary['videos'])}\n"
          f"plot       {summary['plot']}\nreport     {summary['eval_json']}", file=sys.stderr)
    return 0


def build_parser(help_for: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Every verb takes `key=value` options (robopolicy.settings.parse_overrides). The option lists of the verbs whose
    words are in `help_for` (the command line, when it asks for --help) come from the dataclasses that check them."""
    from robopolicy.quickstart import QuickstartConfig
    from robopolicy.settings import options_help

    def options(verb: str) -> str:
        wanted = set(verb.split()) <= set(help_for)
        return OPTION_HELP[verb]() if wanted else f"key=value options (robopolicy {verb} --help lists them)"

    parser = argparse.ArgumentParser(prog="robopolicy", description="Robot imitation learning toolkit. Every verb "
                                     "takes key=value options; dotted keys nest (env.max_steps=400).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="inspect, check and convert episode stores")
    dataset_cmds = dataset.add_subparsers(dest="dataset_command", required=True)
    info = dataset_cmds.add_parser("info", help="episodes, steps, keys, codecs, episode lengths, fps")
    info.add_argument("path", help="store directory, .zarr.zip or fsspec URL")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--task", nargs="*", metavar="KEY=VALUE", help="print the task `robopolicy train data=PATH` "
                      "builds from the store (YAML to edit and pass back with task=FILE); obs=[key,...] action=KEY "
                      "pick the keys")
    info.set_defaults(func=cmd_dataset_info)
    check = dataset_cmds.add_parser("validate", help="full scan for problems (missing chunk files, NaN, timestamps); "
                                    "exit code 1 on errors")
    check.add_argument("path", help="store directory, .zarr.zip or fsspec URL")
    check.add_argument("--deep", action="store_true", help="also decode every chunk of every array, images "
                       "included, naming each damaged one (reads the whole store)")
    check.set_defaults(func=cmd_dataset_validate)
    convert = dataset_cmds.add_parser("convert", help="demonstrations from another format -> an episode store "
                                                      "(resumable: converted episodes are not redone)")
    convert.add_argument("--from", dest="source_format", required=True,
                         help="robomimic | lerobot | video | rosbag | zarr")
    convert.add_argument("src", help="robomimic .hdf5 file, LeRobot dataset directory (v2.x or v3.0), directory of "
                                     "<name>.mp4 + <name>.csv|npz, ROS bag (.bag, ROS 2 bag directory, or a "
                                     "directory of bags), or episode stores to merge (a store or a directory of "
                                     "them, e.g. one per task)")
    convert.add_argument("out", help="episode store to write (zarr directory)")
    convert.add_argument("options", nargs="*", help=options("dataset convert"))
    convert.set_defaults(func=cmd_dataset_convert)

    recording = commands.add_parser("record", help="teleoperated demonstrations from a robot into an episode store")
    recording.add_argument("options", nargs="*", help=options("record"))
    recording.set_defaults(func=cmd_record)

    train = commands.add_parser("train", help="train a policy: robopolicy train data=MY_STORE.zarr, or a shipped "
                                              "task: robopolicy train task=pusht_image policy=diffusion_unet")
    train.add_argument("overrides", nargs="*", help="data=STORE [obs=[key,...]] [action=KEY] builds the task from "
                       "the store; task=NAME|FILE.yaml policy=NAME encoder=NAME optim=NAME pick files of "
                       "robopolicy/configs (or your task file); every other key sets a value of train.yaml, e.g. "
                       "training.max_steps=2000 policy.settings.horizon=16 optim.lr=1e-4")
    train.set_defaults(func=cmd_train)

    distilling = commands.add_parser("distill", help="a one-step consistency student from a trained diffusion or "
                                                     "flow checkpoint")
    distilling.add_argument("teacher", help="the teacher's checkpoint directory, e.g. runs/pusht_keypoint/"
                                            "diffusion_unet/checkpoints/last")
    distilling.add_argument("overrides", nargs="*", help="run settings on top of the teacher's, e.g. "
                                                         "training.max_steps=2000 policy.settings.teacher_steps=16 "
                                                         "run_dir=DIR")
    distilling.set_defaults(func=cmd_distill)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint or an exported artifact: rolled out in its "
                                                "simulator (success rate, videos, plot), or offline against the "
                                                "recorded actions of held-out episodes (action errors, plots)")
    evaluate.add_argument("checkpoint", help="checkpoint directory (e.g. runs/lift_lowdim/diffusion_unet/checkpoints/"
                                             "last) or artifact directory")
    evaluate.add_argument("overrides", nargs="*", help=options("eval"))
    evaluate.set_defaults(func=cmd_eval)

    predicting = commands.add_parser("predict", help="a checkpoint's or artifact's action chunks on a recorded episode")
    predicting.add_argument("path", help="checkpoint or artifact directory")
    predicting.add_argument("options", nargs="*", help=options("predict"))
    predicting.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", help="a checkpoint -> a self-contained artifact for the runtime")
    export.add_argument("checkpoint", help="checkpoint directory, e.g. runs/lift_lowdim/diffusion_unet/checkpoints/last")
    export.add_argument("options", nargs="*", help=options("export"))
    export.set_defaults(func=cmd_export)

    reacting = commands.add_parser("reactive", help="fit a fast reactive layer that corrects an artifact's planned "
                                                    "actions with the newest observation (deploy reactive=true)")
    reacting.add_argument("checkpoint", help="the checkpoint the artifact was exported from")
    reacting.add_argument("options", nargs="*", help=options("reactive"))
    reacting.set_defaults(func=cmd_reactive)

    deploy = commands.add_parser("deploy", help="run an exported artifact on a robot (robot=sim: the simulated arm; "
                                                "robot=ros: a ROS robot through the bridge node)")
    deploy.add_argument("artifact", help="artifact directory written by `robopolicy export`, or tcp://HOST:PORT of "
                                         "`robopolicy serve`")
    deploy.add_argument("options", nargs="*", help=options("deploy"))
    deploy.set_defaults(func=cmd_deploy)

    robot = commands.add_parser("robot", help="the robot side: latency calibration, the simulated arm as a ROS driver")
    robot_cmds = robot.add_subparsers(dest="robot_command", required=True)
    calibration = robot_cmds.add_parser("calibrate", help="estimate a robot's actuation latency from its motion "
                                                          "(the simulated arm, with injected latencies)")
    calibration.add_argument("options", nargs="*", help=options("robot calibrate"))
    calibration.set_defaults(func=cmd_robot_calibrate)
    driver = robot_cmds.add_parser("sim-driver", help="the simulated arm as a ROS driver node (with episodes=N it "
                                                      "also plays the operator)")
    driver.add_argument("options", nargs="*", help=options("robot sim-driver"))
    driver.set_defaults(func=cmd_robot_sim_driver)

    serving = commands.add_parser("serve", help="answer inference requests for an artifact over the network")
    serving.add_argument("artifact", help="artifact directory written by `robopolicy export`, or keygen (make CURVE "
                                          "keys for a server off loopback)")
    serving.add_argument("options", nargs="*", help=options("serve"))
    serving.set_defaults(func=cmd_serve)

    demos = commands.add_parser("demos", help="scripted demonstrations in simulation")
    demos_cmds = demos.add_subparsers(dest="demos_command", required=True)
    generate = demos_cmds.add_parser("generate", help="record expert demos into an episode store")
    generate.add_argument("options", nargs="*", help=f"{options_help(**DEMO_OPTIONS)}, and any env option "
                          "(controller=delta image_size=96 n_points=1024 ...); env=lift|can|square|metaworld|pusht "
                          "obs=lowdim|image|depth|pointcloud")
    generate.set_defaults(func=cmd_demos_generate)

    quick = commands.add_parser("quickstart", help="the README's main job: Lift demos -> training -> evaluation")
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    defaults = QuickstartConfig()
    quick.add_argument("--demos", type=int, default=defaults.n_demos, help="scripted Lift demos to record")
    quick.add_argument("--train-steps", type=int, default=defaults.train_steps, help="optimizer steps")
    quick.add_argument("--train-minutes", type=float, default=defaults.train_minutes,
                       help="training time cap in minutes (0: none); a capped run is reported as undertrained")
    quick.add_argument("--train-threads", type=int, default=defaults.train_threads, help="torch threads for training")
    quick.add_argument("--eval-episodes", type=int, default=defaults.eval_episodes, help="evaluation seeds")
    quick.add_argument("--n-envs", type=int, default=defaults.n_envs, help="parallel simulation processes")
    quick.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `robopolicy` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(help_for=argv if {"-h", "--help"} & set(argv) else ()).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (DataError, ValueError, OSError, NotImplementedError) as err:
        if args.verbose:
            raise
        problem, fix = error_and_fix(err, argv)
        print(f"error: {problem}\nfix: {fix}", file=sys.stderr)
        return 2


def error_and_fix(err: BaseException, argv: Sequence[str]) -> tuple[str, str]:
    """(the problem, the fix) of a user error, each on one line: the fix is the error's own (a DataError's, or a
    message's `fix:` line), else a pointer to the verb's options."""
    problem, _, fix = str(err).partition("\n  fix: ")
    fix = getattr(err, "fix", None) or fix
    if isinstance(err, OSError) and err.strerror and err.filename:
        problem = f"{err.filename}: {err.strerror}"
    verb = " ".join(a for a in argv[:2] if not a.startswith("-") and "=" not in a and "/" not in a)
    fix = fix or f"see `robopolicy {verb} --help`; run with -v for the traceback"
    return " ".join(problem.split()), " ".join(fix.split())


if __name__ == "__main__":
    sys.exit(main())
