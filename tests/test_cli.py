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
    main(["world", "render", "two small red stars on the left of a grass field, glowing", "--out", str(out), "--n", "2"])  # fmt: skip
    assert out.stat().st_size > 0


def test_world_sample_writes_a_grid(tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    main(["world", "sample", "one large blue star on an ocean", "--n", "2", "--steps", "3", "--out", str(out), "--scale", "1"])  # fmt: skip
    assert Image.open(out).size == (2 * 66, 66)


def test_world_sample_rejects_an_empty_prompt(tmp_path):
    with pytest.raises(SystemExit, match="prompt is empty"):
        main(["world", "sample", "  ", "--out", str(tmp_path / "x.png")])


def test_unknown_subcommand_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["no-such-command"])
