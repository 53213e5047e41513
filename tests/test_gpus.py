"""One job per GPU: parallel jobs on one machine each get their own GPU (a faked device list:
``CUDA_VISIBLE_DEVICES`` names GPUs this CPU machine does not have), recorded in status.json."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from mlcli.sweeps import gpus, launch

FAST = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]


def test_visible_gpus_come_from_cuda_visible_devices(monkeypatch):
    for value, expected in [("0,1", ["0", "1"]), ("3, 1", ["3", "1"]), ("", []),
                            ("-1", []), ("2,-1,3", ["2"]), ("GPU-ab12", ["GPU-ab12"])]:  # fmt: skip
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert gpus.visible_gpus() == expected, value


def test_slots_go_round_robin_and_a_held_gpu_is_not_given_twice(tmp_path):
    assert gpus.slots(["0", "1"], 2) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    with (
        gpus.gpu_slot(tmp_path, 0, 1, ["0", "1"]) as first,
        gpus.gpu_slot(tmp_path, 1, 1, ["0", "1"]) as second,
    ):
        assert (first, second) == ("0", "1")
        got: list[str | None] = []

        def third() -> None:
            with gpus.gpu_slot(tmp_path, 2, 1, ["0", "1"]) as gpu:
                got.append(gpu)

        waiting = threading.Thread(target=third)
        waiting.start()
        time.sleep(3 * gpus.POLL_S)
        assert got == []  # both GPUs held (jobs_per_gpu=1): the third job waits
    waiting.join(timeout=10)
    assert got == ["0"]  # job 2 prefers slot 2 mod 2 = GPU 0, free again
    with gpus.gpu_slot(tmp_path, 5, 1, []) as none:
        assert none is None  # no GPU: nothing assigned


def test_no_gpu_is_assigned_on_cpu_or_under_a_scheduler(monkeypatch):
    assert gpus.assigned("auto") and gpus.assigned("cuda") and not gpus.assigned("cpu")
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert not gpus.assigned("cuda")  # SLURM gave the job its GPUs


def _gpus_by_job(root: Path) -> dict[int, str | None]:
    found = {}
    for path in root.rglob("status.json"):
        status = json.loads(path.read_text())
        found[int(path.parent.name)] = status.get("gpu")
    return found


@pytest.mark.long
def test_four_parallel_jobs_on_two_faked_gpus_get_0_1_0_1(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(launch, "cores", lambda: 4)  # four joblib workers on this small machine
    result = cli("train", "-m", "seed=0,1,2,3", "hydra/launcher=joblib", "jobs_per_gpu=2", *FAST)
    assert result.exit_code == 0, result.output
    assert _gpus_by_job(tmp_path / "outputs") == {0: "0", 1: "1", 2: "0", 3: "1"}
    # device=cpu: no GPU given, none recorded
    cpu = cli("train", "-m", "seed=4,5", "device=cpu", *FAST)
    assert cpu.exit_code == 0, cpu.output
    (sweep_dir,) = [d for d in (tmp_path / "outputs" / "sweeps").iterdir()
                    if (d / "0" / "overrides.yaml").read_text().count("device=cpu")]  # fmt: skip
    assert set(_gpus_by_job(sweep_dir).values()) == {None}
