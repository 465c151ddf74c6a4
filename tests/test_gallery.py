"""README's images render on the repository page, and the main command refreshes them.

* Every image link in README (markdown ``![..](path)`` or ``<img src=..>``) is a relative path to
  a file that exists in this repository and that git does not ignore (``results/`` is ignored:
  links into it render as broken images on the repository page).
* The committed copies in ``docs/gallery/`` are exactly the figures ``python -m experiments``
  copies there (``experiments.__main__.GALLERY``), and each is small (≤ 1000 px wide, ≤ 120 kB).
* ``shrink_png`` downscales, fits the size limit, writes the same bytes for the same figure and
  refuses bad limits; ``python -m experiments`` writes the copies where ``--gallery`` says, and a
  ``--fast`` run leaves ``docs/gallery/`` alone.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

import experiments.__main__ as experiments_main
from experiments import shrink_png

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LINKS = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", README) + re.findall(r"<img\s[^>]*src=[\"']([^\"']+)", README)


def test_readme_shows_the_gallery():
    assert len(LINKS) >= 5


@pytest.mark.parametrize("link", LINKS)
def test_every_image_link_in_readme_resolves_to_a_file_in_the_repository(link):
    assert "://" not in link and not link.startswith("/"), f"{link}: not a path inside the repository"
    path = (ROOT / link).resolve()
    assert ROOT in path.parents, f"{link}: outside the repository"
    assert path.is_file(), f"{link}: no such file"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", link], cwd=ROOT).returncode
    assert ignored == 1, f"{link}: git ignores it (check-ignore exit {ignored}), so the repository page cannot show it"


def test_the_gallery_is_what_the_main_command_refreshes_and_it_is_small():
    refreshed = {f"docs/gallery/{figure}" for figures in experiments_main.GALLERY.values() for figure in figures}
    assert {link for link in LINKS if link.startswith("docs/gallery/")} == refreshed
    assert experiments_main.GALLERY_DIR == ROOT / "docs" / "gallery"
    assert set(experiments_main.GALLERY) <= set(experiments_main.EXPERIMENTS)
    for link in refreshed:
        path = ROOT / link
        assert path.stat().st_size <= 120_000, (link, path.stat().st_size)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width <= 1000, (link, image.size)


def busy_figure(path, size=(2400, 1400)):
    """A plot-like image: white, thin coloured lines and noise (hard to compress)."""
    rng = np.random.default_rng(0)
    pixels = np.full((size[1], size[0], 4), 255, np.uint8)
    for row, colour in zip(range(100, size[1], 37), [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)] * 99):
        pixels[row:row + 2, :, :3] = colour
    pixels[::9, ::9, :3] = rng.integers(0, 256, pixels[::9, ::9, :3].shape, dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)


def test_shrink_png_downscales_fits_and_is_reproducible(tmp_path):
    busy_figure(tmp_path / "big.png")
    size = shrink_png(tmp_path / "big.png", tmp_path / "out" / "small.png")
    with Image.open(tmp_path / "out" / "small.png") as image:
        assert image.size == (1000, 583) and image.mode == "P"
    assert size == (tmp_path / "out" / "small.png").stat().st_size <= 120_000
    assert not list((tmp_path / "out").glob("*.partial"))
    shrink_png(tmp_path / "big.png", tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "out" / "small.png").read_bytes()
    tight = shrink_png(tmp_path / "big.png", tmp_path / "tight.png", max_bytes=size // 3)  # narrower until it fits
    with Image.open(tmp_path / "tight.png") as image:
        assert tight <= size // 3 and 200 <= image.width < 1000
    with pytest.raises(ValueError, match="does not fit in max_bytes=100 even at 200 pixels"):
        shrink_png(tmp_path / "big.png", tmp_path / "never.png", max_bytes=100)
    assert not (tmp_path / "never.png").exists()
    with pytest.raises(ValueError, match="max_width=50"):
        shrink_png(tmp_path / "big.png", tmp_path / "never.png", max_width=50)


def gallery_args(*argv):
    return argparse.Namespace(**{"fast": False, "backend": "numpy", "seed": 0, "gallery": None, "no_gallery": False,
                                 **dict(argv)})


def test_only_a_full_default_run_refreshes_the_committed_gallery(tmp_path):
    assert experiments_main.gallery_dir(gallery_args()) == experiments_main.GALLERY_DIR
    for changed in [("fast", True), ("backend", "torch"), ("seed", 1), ("no_gallery", True)]:
        assert experiments_main.gallery_dir(gallery_args(changed)) is None, changed
    assert experiments_main.gallery_dir(gallery_args(("fast", True), ("gallery", tmp_path))) == tmp_path


def test_the_main_command_writes_the_gallery_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments_main, "GALLERY_DIR", tmp_path / "committed")  # never touch docs/gallery here
    experiments_main.main(["--fast", "--out", str(tmp_path / "results"), "--only", "distribution_shift"])
    assert (tmp_path / "results" / "distribution_shift" / "distribution_shift.png").is_file()
    assert not (tmp_path / "committed").exists()  # a --fast run leaves the committed copies alone
    experiments_main.main(["--fast", "--out", str(tmp_path / "results"), "--only", "distribution_shift",
                           "--gallery", str(tmp_path / "gallery")])
    copy = tmp_path / "gallery" / "distribution_shift.png"
    with Image.open(copy) as image, Image.open(tmp_path / "results" / "distribution_shift" / "distribution_shift.png") as full:
        assert image.width == min(1000, full.width) and copy.stat().st_size <= 120_000
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == ["distribution_shift.png"]
