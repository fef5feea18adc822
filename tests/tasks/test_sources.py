from pathlib import Path

import pytest

from tasks.sources import list_images, label_path, match_label, image_path


def test_match_label_by_stem_and_spacenet_id():
    files = [Path("/l/scene_a.geojson"), Path("/l/buildings_AOI_2_Vegas_img12.geojson")]
    assert match_label("scene_a", files) == files[0]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img12", files) == files[1]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img1", files) is None
    assert match_label("other", files) is None


def test_directories_and_single_label_file(tmp_path, luigi_config):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for n in ("b", "a"):
        (tmp_path / "img" / f"{n}.tif").write_bytes(b"x")
        (tmp_path / "lab" / f"{n}.geojson").write_text("{}")
    (tmp_path / "img" / "notes.txt").write_text("ignored")
    luigi_config("data", "images", str(tmp_path / "img"))
    luigi_config("data", "labels", str(tmp_path / "lab"))
    assert list_images() == ["a", "b"]
    assert image_path("a") == (tmp_path / "img" / "a.tif").resolve()
    assert label_path("b") == (tmp_path / "lab" / "b.geojson").resolve()
    luigi_config("data", "labels", str(tmp_path / "lab" / "a.geojson"))
    assert label_path("b") == (tmp_path / "lab" / "a.geojson").resolve(), "one file serves every image"
    with pytest.raises(KeyError, match="unknown image"):
        image_path("zzz")


def test_demo_is_the_default(luigi_config, workdir):
    luigi_config("data", "images", "")
    luigi_config("data", "demo_scenes", 3)
    assert list_images() == ["demo_00", "demo_01", "demo_02"]
    assert label_path("demo_01").name == "demo_01.geojson"
