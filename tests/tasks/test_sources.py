import pytest

from tasks.sources import demo_image_path, demo_label_path, image_path, label_path, labelled_images, list_images


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
    (tmp_path / "img" / "c.tif").write_bytes(b"x")  # no label file of its own
    assert labelled_images() == ["a", "b"]
    luigi_config("data", "labels", str(tmp_path / "lab" / "a.geojson"))
    assert label_path("b") == (tmp_path / "lab" / "a.geojson").resolve(), "one file serves every image"
    with pytest.raises(KeyError, match="unknown image"):
        image_path("zzz")


def test_demo_is_the_default(luigi_config, workdir):
    luigi_config("data", "images", "")
    luigi_config("data", "demo_scenes", 3)
    luigi_config("data", "demo_size", 96)
    luigi_config("data", "demo_seed", 7)
    assert list_images() == ["demo_00", "demo_01", "demo_02"]
    assert label_path("demo_01").name == "demo_01.geojson"
    assert labelled_images() == ["demo_00", "demo_01", "demo_02"]
    key = workdir / "demo" / "n3_s96_seed7"
    assert demo_image_path("demo_02") == image_path("demo_02") == key / "images" / "demo_02.tif"
    assert demo_label_path("demo_02") == label_path("demo_02") == key / "labels" / "demo_02.geojson"
