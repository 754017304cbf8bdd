"""Run records: a rerun into a folder holding a run of another configuration is refused, naming what differs."""

import pytest
import yaml

from nemo_streaming_ssl.run_record import (
    RECORD_PATH,
    RerunError,
    check_rerun,
    config_differences,
    logged_nemo_model_config,
    nemo_model_definition,
    record_run,
)

CAUSAL = {"encoder": {"att_context_size": [-1, 0], "d_model": 64}, "masking": {"block_size": 40}}
LOOKAHEAD = {"encoder": {"att_context_size": [-1, 4], "d_model": 64}, "masking": {"block_size": 40}}


def test_differences_name_nested_keys_and_absent_ones():
    assert config_differences(CAUSAL, LOOKAHEAD) == ["encoder.att_context_size: [-1, 0] -> [-1, 4]"]
    assert config_differences({"a": 1}, {"a": 1, "b": {"c": 2}}) == ["b: <absent> -> {'c': 2}"]
    assert config_differences(CAUSAL, CAUSAL) == []


def test_same_definition_reruns_and_another_is_refused(tmp_path):
    run = tmp_path / "run"
    check_rerun(run, CAUSAL, new_run="use name=...")  # an empty folder: nothing to compare with
    record_run(run, CAUSAL)
    assert yaml.safe_load((run / RECORD_PATH).read_text()) == CAUSAL
    check_rerun(run, CAUSAL, new_run="use name=...")
    with pytest.raises(RerunError, match=r"(?s)encoder.att_context_size: \[-1, 0\] -> \[-1, 4\].*"
                                         r"To start a new run, use name=\.\.\..*run_record/config.yaml"):
        check_rerun(run, LOOKAHEAD, new_run="use name=...")
    assert yaml.safe_load((run / RECORD_PATH).read_text()) == CAUSAL  # the refused run recorded nothing
    assert [p.relative_to(run) for p in run.rglob("*") if p.is_file()] == [RECORD_PATH]


def test_folder_from_before_records_is_checked_against_lightnings_logged_config(tmp_path):
    """NeMo runs made before run records: Lightning's newest version_*/hparams.yaml holds the model config."""
    (tmp_path / "version_0").mkdir()
    logged = {**LOOKAHEAD, "train_ds": {"batch_size": 8}, "optim": {"lr": 1e-3}, "nemo_version": "2.5.3"}
    (tmp_path / "version_0" / "hparams.yaml").write_text(yaml.safe_dump({"cfg": logged}))
    earlier = nemo_model_definition(logged_nemo_model_config(tmp_path))
    assert earlier == LOOKAHEAD  # data, optimizer and NeMo's bookkeeping are not part of the definition
    check_rerun(tmp_path, {**LOOKAHEAD}, new_run="x", earlier=earlier)
    with pytest.raises(RerunError, match=r"(?s)\[-1, 4\] -> \[-1, 0\].*its logged config"):
        check_rerun(tmp_path, CAUSAL, new_run="x", earlier=earlier)
    assert logged_nemo_model_config(tmp_path / "nothing_here") is None
