"""``build.factory``: a config node composed once, a fresh object at every call."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mlcli.config.targets import TargetNotAllowedError, factory


def test_each_call_builds_a_fresh_object_with_the_nodes_settings():
    make = factory(OmegaConf.create({"_target_": "builtins.dict", "a": 1}), "x", ["builtins"])
    first, second = make(b=2), make(b=3)
    assert first == {"a": 1, "b": 2} and second == {"a": 1, "b": 3}
    assert first is not second


def test_nested_objects_are_not_shared_between_calls():
    node = OmegaConf.create({"_target_": "builtins.dict", "inner": {"_target_": "builtins.list"}})
    make = factory(node, "x", ["builtins"])
    first, second = make(), make()
    assert first == second == {"inner": []}
    assert first["inner"] is not second["inner"]


def test_a_partial_node_is_called_with_the_arguments():
    node = OmegaConf.create({"_target_": "builtins.dict", "_partial_": True, "a": 1})
    assert factory(node, "x", ["builtins"])(b=2) == {"a": 1, "b": 2}


def test_targets_are_checked_when_the_factory_is_made():
    node = OmegaConf.create({"_target_": "os.system", "_partial_": True})
    with pytest.raises(TargetNotAllowedError):
        factory(node, "x", [])
