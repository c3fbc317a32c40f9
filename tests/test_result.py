"""RunResult and EpochRecord: what a run measured, as written today and as older versions stored it."""

from __future__ import annotations

from mnistbench.result import EpochRecord, RunResult, per_class_accuracy


def test_epoch_records_of_earlier_versions_are_read() -> None:
    old = {"epoch": 2, "train_loss": 0.3, "val_accuracy": 97.5, "images": 100, "extra": 1}
    assert EpochRecord.from_dict(old) == EpochRecord(
        2, train_loss=0.3, images=100, eval_split="val", eval_accuracy=97.5
    )
    diverged = EpochRecord.from_dict({"epoch": 3, "status": "diverged", "step": 17})
    assert (diverged.ok, diverged.diverged_step) == (False, 17)
    assert EpochRecord.from_dict({"train_loss": 0.1}, position=4).epoch == 5


def test_a_stored_result_maps_renamed_fields_and_keeps_unknown_ones() -> None:
    stored = {"spec": {}, "amp": "off", "history": [{"epoch": 1}], "energy_joules": 3.0}
    result, unknown = RunResult.from_stored(stored)
    assert result.precision == "fp32" and result.history == [EpochRecord(1)]
    assert unknown == {"energy_joules": 3.0}
    assert RunResult.from_stored({"spec": {}, "amp": "bf16"})[0].precision == "bf16"


def test_progress_line_names_the_split_and_where_a_run_diverged() -> None:
    entry = EpochRecord(1, train_loss=0.5, eval_split="test", eval_accuracy=91.0)
    assert entry.progress_line()["test_accuracy"] == 91.0
    assert "eval_split" not in entry.progress_line()
    diverged = EpochRecord(2, status="diverged", diverged_step=9).progress_line()
    assert diverged == {"epoch": 2, "status": "diverged", "step": 9}


def test_a_class_absent_from_the_split_has_no_accuracy() -> None:
    assert per_class_accuracy([[3, 1], [0, 0]]) == [75.0, None]
