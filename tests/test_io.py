import os
import stat

import pytest
import torch

from diffenvs.io import load_tensors, save_tensors, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_leave_no_temp_files_and_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        save_tensors({"w": torch.arange(3.0)}, tmp_path / "w.safetensors")
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "w.safetensors"]
    assert _mode(tmp_path / "w.safetensors") == 0o644
    assert _mode(tmp_path / "m.json") == 0o644
    assert torch.equal(load_tensors(tmp_path / "w.safetensors")["w"], torch.arange(3.0))


def test_folder_swap_is_readable(tmp_path):
    from diffenvs.world.training.train_unet import save_folder_atomically

    mask = os.umask(0o022)
    try:
        save_folder_atomically(tmp_path / "model", lambda d: (d / "x.txt").write_text("1"))
        save_folder_atomically(tmp_path / "model", lambda d: (d / "y.txt").write_text("2"))
    finally:
        os.umask(mask)
    assert _mode(tmp_path / "model") == 0o755
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["y.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_loading_garbage_names_the_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        load_tensors(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_tensors(tmp_path / "missing.safetensors")
