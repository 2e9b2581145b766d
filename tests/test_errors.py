"""Every error raised for bad user input belongs to the HPSHError family (the CLI's exit 2)."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2 import errors
from hpsh_tf2.config import ConfigError


def test_family_tree():
    for cls in (
        errors.ConfigError,
        errors.DatasetError,
        errors.BadImageError,
        errors.ModelMismatchError,
        errors.WorkdirLockedError,
        errors.RunFailedError,
        errors.UsageError,
    ):
        assert issubclass(cls, errors.HPSHError), cls
    assert errors.DataError is errors.DatasetError
    assert ConfigError is errors.ConfigError
    # ValueError kept where callers already catch it
    for cls in (errors.ConfigError, errors.DatasetError, errors.ModelMismatchError):
        assert issubclass(cls, ValueError)


def test_user_input_errors_are_hpsh_errors(tmp_path):
    from hpsh_tf2.data.download import download_dataset, parse_checksum
    from hpsh_tf2.data.pipeline import ClassBalancedSampler
    from hpsh_tf2.models.backbone import WeightsError, get_backbone_spec

    cases = [
        (lambda: get_backbone_spec("no_such_net"), errors.ConfigError, "model.backbone"),
        (lambda: parse_checksum("crc32:1234"), errors.UsageError, "checksum"),
        (lambda: parse_checksum("md5:xyz"), errors.UsageError, "hexadecimal"),
        (lambda: download_dataset("nosuch", tmp_path), errors.UsageError, "nosuch"),
        (
            lambda: ClassBalancedSampler(
                np.array([0, 0, 1, 1]), classes_per_batch=3, samples_per_class=2, seed=0
            ),
            errors.ConfigError,
            "classes_per_batch=3",
        ),
    ]
    for call, cls, text in cases:
        with pytest.raises(cls, match=text):
            call()
    assert issubclass(WeightsError, errors.HPSHError)
