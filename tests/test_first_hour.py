"""The first hour of a new user: the thread policy, the CLI's messages and summaries, the demo's
pictures (issue: fast on a busy machine, output that speaks)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from diffenvs import runtime
from diffenvs.cli import _global_options, main


@pytest.fixture
def clean_threads(monkeypatch):
    """An environment where nobody chose threads; restores torch's count afterwards."""
    import torch

    before = torch.get_num_threads()
    for var in ("DIFFENVS_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "_state", {"chosen": False, "applied": False})
    yield
    torch.set_num_threads(before)


def test_threads_default_to_one_and_follow_the_one_option(clean_threads, monkeypatch):
    assert runtime.requested_threads() == 1
    monkeypatch.setenv("DIFFENVS_THREADS", "3")
    assert runtime.requested_threads() == 3
    monkeypatch.setenv("DIFFENVS_THREADS", "torch")
    assert runtime.requested_threads() is None
    monkeypatch.setenv("DIFFENVS_THREADS", "many")
    with pytest.raises(ValueError, match="DIFFENVS_THREADS=torch"):
        runtime.requested_threads()


def test_an_unset_diffenvs_threads_respects_omp_num_threads(clean_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.requested_threads() == 2


def test_prepare_process_sets_threads_and_a_passive_wait_policy(clean_threads):
    import torch

    assert runtime.prepare_process(2) == 2
    assert torch.get_num_threads() == 2
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OMP_NUM_THREADS"] == os.environ["DIFFENVS_THREADS"] == "2"


def test_apply_default_keeps_a_users_choice(clean_threads, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user chose
    torch.set_num_threads(2)
    runtime.apply_default()
    assert torch.get_num_threads() == 2


def test_apply_default_sets_one_thread_when_nobody_chose(clean_threads, monkeypatch):
    import torch

    monkeypatch.setattr(runtime, "_torch_default_threads", lambda: {torch.get_num_threads()})
    runtime.apply_default()
    assert torch.get_num_threads() == 1


def test_global_options_are_taken_out_of_the_command_line():
    rest, opts = _global_options(["--debug", "train", "ppo", "--threads", "2", "--verbose"])
    assert rest == ["train", "ppo"]
    assert opts == {"debug": True, "verbose": True, "threads": "2"}
    with pytest.raises(SystemExit, match="--threads needs a whole number"):
        _global_options(["--threads=0", "envs"])


def test_a_user_mistake_is_one_message_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["world", "sample", "a red star", "--model", str(tmp_path / "missing")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "diffenvs: error:" in err and "Traceback" not in err and "--debug" in err


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "world", "sample", "a red star", "--model", str(tmp_path / "missing")])


def test_world_render_refuses_text_it_cannot_draw(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["world", "render", "a purple elephant on the moon", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert "'elephant'" in err and "'moon'" in err and "night sky" in err
    assert not (tmp_path / "x.png").exists()


def test_train_ends_with_a_summary(tmp_path, capsys):
    main(
        [
            "train",
            "tabular",
            "--model",
            "renderer",
            "--detector",
            "exact",
            "--grammar",
            "tiny",
            "--episodes",
            "20",
            "--eval-episodes",
            "2",
            "--output-dir",
            str(tmp_path),
            "--run-name",
            "s",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "Done: trained tabular" in out and "Evaluation" in out and str(tmp_path / "s") in out


def test_world_help_loads_no_torch():
    code = (
        "import sys\n"
        "from diffenvs.cli import main\n"
        "for argv in (['--help'], ['world', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_labelled_grid_writes_a_picture(tmp_path):
    from PIL import Image

    from diffenvs.demo import labelled_grid

    rows = [np.zeros((3, 8, 8, 3), np.uint8), np.full((3, 8, 8, 3), 255, np.uint8)]
    path = labelled_grid(rows, ["a", "b"], ["p1", "p2", "p3"], tmp_path / "g.png", title="t")
    assert Image.open(path).size[0] > 100


def test_quiet_loading_hides_and_restores_the_bars(monkeypatch):
    from diffusers.utils import logging

    monkeypatch.delenv("DIFFENVS_VERBOSE", raising=False)
    logging.enable_progress_bar()
    with runtime.quiet_loading():
        assert not logging.is_progress_bar_enabled()
    assert logging.is_progress_bar_enabled()
    monkeypatch.setenv("DIFFENVS_VERBOSE", "1")
    with runtime.quiet_loading():
        assert logging.is_progress_bar_enabled()


def test_world_sample_warns_about_words_the_world_never_saw(tmp_path, capsys):
    out = tmp_path / "g.png"
    main(["world", "sample", "a purple elephant", "--n", "1", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert "warning" in err and "'elephant'" in err
    assert out.exists()


def test_the_demo_preset_rewards_prompt_following_and_is_judged_independently():
    from agents.direct.config import DirectConfig, resolve_config
    from diffenvs.demo import DEMO_PRESET

    cfg = resolve_config(DirectConfig(preset=DEMO_PRESET))
    # The oracle's reading of the prompt is the reward; the judge (the check) never enters it.
    assert cfg.algorithm == "draft" and cfg.reward == "oracle" and cfg.eval_judge
    # Training and evaluation prompts are disjoint: the gain is on prompts never trained on.
    assert cfg.prompts == "world" and cfg.eval_prompts == "world:heldout"
    assert cfg.eval_episodes >= 64


def test_the_demo_reports_each_attribute_for_both_readers():
    from diffenvs.demo import CORE_ATTRIBUTES, following_by_attribute
    from diffenvs.models import load_oracle
    from diffenvs.world.render import render, scene_from_prompt

    prompts = ["one large red circle in the middle of a grass field"] * 2
    truth = np.stack([np.asarray(render(scene_from_prompt(p), i)) for i, p in enumerate(prompts)])
    table = following_by_attribute(
        {"before": truth, "after": truth[::-1].copy()}, prompts, load_oracle()
    )
    assert set(table) == set(CORE_ATTRIBUTES)
    assert all(row["before"] == row["after"] == 1.0 for row in table.values())


def test_the_cli_fills_an_agents_thread_option_unless_typed(monkeypatch):
    from agents.ppo.config import PPOConfig
    from diffenvs.cli import _fill_threads

    monkeypatch.setenv("DIFFENVS_THREADS", "3")
    assert _fill_threads(PPOConfig(), ()).torch_threads == 3
    assert _fill_threads(PPOConfig(torch_threads=2), ("torch_threads",)).torch_threads == 2
