"""Every user error is one `error:` line and one `fix:` line on stderr, exit code 2, no traceback; -v shows it.
One row per mistake a user makes (each was a raw traceback, or a silent surprise, before)."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode
from tests.tiny_runs import TWO_STEP_UNET


@dataclass(frozen=True)
class Mistake:
    """argv made by `command(tmp_path, state_artifact, stack)` (stack: an ExitStack for what must stay open while
    it runs); the error and fix lines must contain the given text."""

    name: str
    command: Callable[[Path, Path, ExitStack], list[str]]
    error: str
    fix: str


def checkpoint_copy(tmp_path: Path, artifact: Path) -> Path:
    """A copy of the checkpoint the state artifact was exported from, to damage."""
    source = Path(json.loads((artifact / "meta.json").read_text())["source"]["checkpoint"])
    return Path(shutil.copytree(source, tmp_path / "checkpoint"))


def yaml_tag_in_config(tmp_path: Path, artifact: Path, _: ExitStack) -> list[str]:
    checkpoint = checkpoint_copy(tmp_path, artifact)
    config = checkpoint / "config.yaml"
    config.write_text(config.read_text() + f"hook: !!python/object/apply:os.system ['touch {tmp_path / 'ran'}']\n")
    return ["eval", str(checkpoint)]


def unknown_policy_in_meta(tmp_path: Path, artifact: Path, _: ExitStack) -> list[str]:
    checkpoint = checkpoint_copy(tmp_path, artifact)
    meta = json.loads((checkpoint / "meta.json").read_text())
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "policy": "diffusion_unett"}))
    return ["export", str(checkpoint), f"out={tmp_path / 'out'}"]


def string_actions(tmp_path: Path, *_: object) -> list[str]:
    store = EpisodeStore.create(tmp_path / "text.zarr", attrs={"fps": 10})
    for index in range(3):
        store.append_episode({"state": np.zeros((20, 3), np.float32), "action": np.array([["0.1", "0.2"]] * 20)})
    return ["train", f"data={tmp_path / 'text.zarr'}", f"run_dir={tmp_path / 'run'}", *TWO_STEP_UNET]


def port_in_use(tmp_path: Path, artifact: Path, stack: ExitStack) -> list[str]:
    holder = stack.enter_context(socket.socket())
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return ["serve", str(artifact), f"port={holder.getsockname()[1]}"]


MISTAKES = [
    Mistake("task typo", lambda *_: ["train", "task=pusht_keypiont"], "unknown task 'pusht_keypiont'",
            "did you mean task=pusht_keypoint?"),
    Mistake("policy typo", lambda *_: ["train", "policy=difusion_unet"], "unknown policy 'difusion_unet'",
            "did you mean policy=diffusion_unet?"),
    Mistake("unknown key", lambda *_: ["train", "training.max_step=5"], "unknown training settings ['max_step']",
            "robopolicy train --help"),
    Mistake("word for a number", lambda *_: ["train", "training.max_steps=abc"],
            "training.max_steps='abc' must be an integer", "set training.max_steps=<an integer>"),
    Mistake("eval: no checkpoint", lambda t, *_: ["eval", str(t / "nope")], "nope does not exist",
            "pass a checkpoint directory"),
    Mistake("export: no checkpoint", lambda t, *_: ["export", str(t / "nope"), f"out={t / 'o'}"],
            "nope does not exist", "pass a checkpoint directory"),
    Mistake("predict: no checkpoint", lambda t, *_: ["predict", str(t / "nope")], "nope does not exist",
            "pass a checkpoint directory"),
    Mistake("serve: no artifact", lambda t, *_: ["serve", str(t / "nope")], "nope does not exist",
            "pass an artifact directory"),
    Mistake("deploy: no artifact", lambda t, *_: ["deploy", str(t / "nope")], "nope does not exist",
            "pass an artifact directory"),
    Mistake("port out of range", lambda _, a, __: ["serve", str(a), "port=99999"], "port=99999 is not a TCP port",
            "use a port in 1-65535"),
    Mistake("port in use", port_in_use, "cannot listen on 127.0.0.1:", "another port"),
    Mistake("YAML tag in a checkpoint config", yaml_tag_in_config, "is not plain YAML", "remove the tag"),
    Mistake("unknown policy in meta.json", unknown_policy_in_meta, "policy 'diffusion_unett' is not one",
            "the robopolicy version that wrote it"),
    Mistake("text actions", string_actions, "[data/action]: action values are <U3, not numbers",
            "store them as float32"),
    Mistake("torchscript artifact, untrusted", lambda t, a, _: ["serve", str(torchscript_copy(t, a))],
            "runs code from the file when it is loaded", "format=onnx"),
]


def torchscript_copy(tmp_path: Path, artifact: Path) -> Path:
    copy = Path(shutil.copytree(artifact, tmp_path / "torchscript"))
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "format": "torchscript", "file": "policy.onnx"}))
    return copy


def error_lines(stderr: str) -> tuple[list[str], list[str]]:
    lines = stderr.splitlines()
    return [line for line in lines if line.startswith("error: ")], [line for line in lines if line.startswith("fix: ")]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_user_error_is_one_error_line_and_one_fix_line(mistake, state_artifact, tmp_path, capsys):
    with ExitStack() as stack:
        code = main(mistake.command(tmp_path, state_artifact, stack))
    stderr = capsys.readouterr().err
    errors, fixes = error_lines(stderr)
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(errors) == 1 and len(fixes) == 1, stderr
    assert mistake.error in errors[0], errors[0]
    assert mistake.fix in fixes[0], fixes[0]
    assert not (tmp_path / "ran").exists(), "a YAML tag ran code"


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["-v", "eval", str(tmp_path / "nope")])


def no_space_for_files_over(limit: int) -> Callable[[], None]:
    """A child-process hook: files may not grow past `limit` bytes (how a full disk looks to the writer)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_checkpointing_is_an_error_with_the_fix_and_leaves_no_partial_checkpoint(tmp_path):
    store = EpisodeStore.create(tmp_path / "demos.zarr", attrs={"fps": 10})
    for index in range(4):
        store.append_episode(synthetic_episode(index, 30, image=False))
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "robopolicy.cli", "train", f"data={tmp_path / 'demos.zarr'}",
                             f"run_dir={run}", *TWO_STEP_UNET], capture_output=True, text=True, timeout=300,
                            preexec_fn=no_space_for_files_over(64 * 1024))
    errors, fixes = error_lines(result.stderr)
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "could not write checkpoint" in errors[0] and "File too large" in errors[0], errors[0]
    assert "free space" in fixes[0] and "resume=true" in fixes[0], fixes[0]
    assert not list((run / "checkpoints").glob(".tmp-*")), "a partial checkpoint was left behind"
