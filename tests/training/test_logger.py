"""train_log.jsonl after a resume: the steps the killed run logged past its last checkpoint are not repeated."""

from __future__ import annotations

import json

from robopolicy.training.logger import MetricLogger


def logged_steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    first = MetricLogger(tmp_path, True, False, False, "", {})
    for step in range(1, 8):  # checkpoint at 4, then killed at 7
        first.log(step, {"loss": 1.0 / step})
    first.jsonl.write('{"step": 8, "lo')  # the line the kill cut short
    first.jsonl.flush()
    resumed = MetricLogger(tmp_path, True, False, False, "", {}, resumed_step=4)
    for step in range(5, 9):
        resumed.log(step, {"loss": 2.0 / step})
    resumed.close()
    assert logged_steps(tmp_path / "train_log.jsonl") == list(range(1, 9))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert losses[3] == 0.25 and losses[4] == 0.4  # step 4 from the first run, step 5 from the resumed one
    fresh = MetricLogger(tmp_path / "other", True, False, False, "", {})
    fresh.close()
    assert (tmp_path / "other" / "train_log.jsonl").read_text() == ""
