"""Each training log line reaches a person once. Under Dagster Pipes the launcher shows the
training process's stderr (raw) and the lines it sends through Pipes (in the event log); the
per-epoch validation line used to go both ways and appeared twice. Progress goes through
Pipes as whole lines too: a bar the training process redrew on the launcher's terminal would
be cut by the launcher's own log lines."""

from __future__ import annotations

import re

import dagster as dg

from pipeline.assets.train import trained_model
from pipeline.profiles import DEMO_TRAINING
from pipeline.resources import GeoscoutSettings, TrainingSettings

EPOCHS = 2
NEEDLE = "validation top-1 per level"
PROGRESS = re.compile(r"^(epoch \d+/\d+|training): +\d+% ")  # tqdm's meter, as whole lines


def test_validation_line_is_logged_once_per_epoch(tiny_dataset, capfd):
    resources = {"settings": GeoscoutSettings(data_root=str(tiny_dataset)),
                 "training": TrainingSettings(**{
                     **DEMO_TRAINING, "nproc_per_node": 1, "image_size": 32, "batch_size": 8,
                     "epochs": EPOCHS, "workers": 0, "device": "cpu"}),
                 "pipes_client": dg.PipesSubprocessClient()}
    with dg.instance_for_test() as instance:
        result = dg.materialize([trained_model], resources=resources, instance=instance)
        assert result.success
        messages = [e.user_message or "" for e in instance.all_logs(result.run_id)]
        events = [m for m in messages if NEEDLE in m]
        progress = [m for m in messages if PROGRESS.match(m)]
    all_err = capfd.readouterr().err.splitlines()
    raw_err = [line for line in all_err if " - dagster - " not in line]
    err = [line for line in all_err if NEEDLE in line]
    wrapped = [line for line in err if " - dagster - " in line]  # Dagster's console logger
    raw = [line for line in err if line not in wrapped]  # the training process's own stderr
    assert len(events) == EPOCHS, events  # through Pipes, into the Dagster event log
    assert len(wrapped) == EPOCHS, wrapped
    assert raw == []  # and not a second time, raw, on the process's stderr
    assert [f"epoch {e}/{EPOCHS}" in m for e, m in enumerate(events, 1)] == [True] * EPOCHS
    for desc in [f"epoch {e}/{EPOCHS}:" for e in range(1, EPOCHS + 1)] + ["training:"]:
        done = [m for m in progress if m.startswith(desc) and " 100% " in m]
        assert len(done) == 1, progress  # each epoch's last count once, in the event log
    assert not [line for line in raw_err if "step/s]" in line or "epoch/s]" in line]
