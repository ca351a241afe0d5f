import pytest

from diffenvs.cli import main


def test_envs_lists_registered_ids(capsys):
    import diffenvs

    main(["envs"])
    out = capsys.readouterr().out
    for env_id in diffenvs.ENV_IDS:
        assert env_id in out


def test_world_render_writes_a_png(tmp_path):
    out = tmp_path / "r.png"
    main(
        [
            "world",
            "render",
            "two small red stars on the left of a grass field, glowing",
            "--out",
            str(out),
            "--n",
            "2",
        ]
    )
    assert out.stat().st_size > 0


def test_world_sample_writes_a_grid(tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    main(
        [
            "world",
            "sample",
            "one large blue star on an ocean",
            "--n",
            "2",
            "--steps",
            "3",
            "--out",
            str(out),
            "--scale",
            "1",
        ]
    )
    assert Image.open(out).size == (2 * 66, 66)


def test_world_sample_rejects_an_empty_prompt(tmp_path):
    with pytest.raises(SystemExit, match="prompt is empty"):
        main(["world", "sample", "  ", "--out", str(tmp_path / "x.png")])


def test_unknown_subcommand_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["no-such-command"])


AGENT_NAMES = (
    "tabular",
    "sb3-grammar",
    "tianshou-grammar",
    "sb3-denoise",
    "tianshou-denoise",
    "ppo",
    "sql",
    "reinforce",
    "prompt-baselines",
    "sb3-prompt",
    "tianshou-prompt",
)


def test_train_group_lists_every_agent(capsys):
    from agents.common.contract import discover

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    agents = discover()
    assert set(AGENT_NAMES) <= set(agents)
    for name, spec in agents.items():
        assert name in out and spec.summary.split()[0] in out


def test_listing_agents_loads_no_training_code():
    # Listing agents imports only their light config modules: no torch, SB3 or Tianshou. Run in a
    # fresh interpreter, since this test process may have imported them already.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from diffenvs.cli import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'torch', 'stable_baselines3', 'tianshou'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_train_tabular_runs_on_the_renderer(tmp_path):
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
            "30",
            "--eval-episodes",
            "3",
            "--output-dir",
            str(tmp_path),
            "--run-name",
            "cli",
            "--no-progress",
        ]
    )
    assert (tmp_path / "cli" / "eval.json").exists()


def test_train_marks_typed_options_of_a_config_with_presets(monkeypatch):
    # A config with an `explicit` field has presets; the options typed on the command line are
    # recorded there so that they win over the preset even where they equal the default.
    import importlib

    from agents.common.contract import discover

    module, _, func = discover()["ppo"].train.partition(":")
    seen = {}
    monkeypatch.setattr(importlib.import_module(module), func, lambda cfg: seen.update(cfg=cfg))
    main(["train", "ppo", "--preset", "quick", "--kl-loss-coef", "0.001"])
    assert seen["cfg"].preset == "quick"
    assert seen["cfg"].explicit == ("preset", "kl_loss_coef")
