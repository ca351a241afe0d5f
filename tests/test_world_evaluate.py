import numpy as np
import pytest

from diffenvs.world.evaluate import frechet_distance
from diffenvs.world.metrics_page import bar_rows, write_metrics_page


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
        "t2i_prompt_following_heldout": {
            "20 steps, guidance 4.0": {"count": 0.86, "shape": 0.2, "modifier_false_positive": 0.3},
            "10 steps, guidance 4.0": {"count": 0.70, "shape": 0.19},
        },
    }
    rows = {label: (value, bar, d) for label, value, bar, d in bar_rows(results)}
    assert rows["oracle shape (rendered)"] == (0.99, 0.97, "min")
    assert rows["T2I count"] == (0.86, 0.85, "min")
    assert rows["T2I modifier false positives"] == (0.3, 0.10, "max")
    assert rows["T2I count: second setting − first"][0] == pytest.approx(-0.16)
    assert "CLIP zero-shot shape" not in rows  # not measured, not reported
    write_metrics_page(results, tmp_path / "m.md")
    page = (tmp_path / "m.md").read_text()
    # met: oracle shape, T2I count, shape's 10-step drop (-1 point); not met: the other three.
    assert "3 of 7 bars met" in page
    assert "| T2I shape | 20.0 % | ≥ 90.0 % | **no** |" in page
    assert "| T2I modifier false positives | 30.0 % | ≤ 10.0 % | **no** |" in page
