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


def test_train_group_lists_every_agent(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("tabular", "sb3-grammar", "tianshou-grammar", "sb3-denoise", "tianshou-denoise"):
        assert name in out


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
