import numpy as np
import pytest

from diffenvs.world.evaluate import bar_rows, frechet_distance, write_metrics_page


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20_000, 4))
    b = rng.normal(size=(20_000, 4)) * 2.0 + 0.5
    # ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) = 4 * 0.25 + 4 * (1 + 4 - 2 * 2) = 5
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_bars_are_read_from_the_results_and_rendered(tmp_path):
    results = {
        "config": {},
        "oracle_accuracy_rendered_heldout": {"shape": 0.99, "colour": 0.5},
        "t2i_prompt_following_heldout": {"4.0": {"count": 0.75, "shape": 0.2}},
    }
    rows = {label: (value, bar) for label, value, bar in bar_rows(results)}
    assert rows["oracle shape (rendered)"] == (0.99, 0.97)
    assert rows["T2I count"] == (0.75, 0.70)
    assert "CLIP zero-shot shape" not in rows  # not measured, not reported
    write_metrics_page(results, tmp_path / "m.md")
    page = (tmp_path / "m.md").read_text()
    assert "2 of 4 bars met" in page
    assert "| T2I shape | 20.0 % | ≥ 85.0 % | **no** |" in page
