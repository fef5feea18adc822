from pathlib import Path

import pytest

from footprints.errors import InputError
from tasks.sources import demo_image_path, demo_label_path, image_path, label_path, labelled_images, list_images
from tasks.tiling import TileImage


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


# ---------------------------------------------------------------- bad inputs (issue 11)


def test_two_label_files_of_one_stem_in_different_directories_are_an_error_naming_both(tmp_path, luigi_config):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.tif").write_bytes(b"x")
    for d in ("north", "south"):
        (tmp_path / "lab" / d).mkdir(parents=True)
        (tmp_path / "lab" / d / "a.geojson").write_text("{}")
    luigi_config("data", "images", str(tmp_path / "img"))
    luigi_config("data", "labels", str(tmp_path / "lab" / "*" / "*.geojson"))
    with pytest.raises(InputError) as e:
        label_path("a")
    msg = str(e.value)
    assert "north/a.geojson" in msg and "south/a.geojson" in msg and "two label files share the name 'a'" in msg


def test_two_images_of_one_stem_are_an_error_naming_both(tmp_path, luigi_config):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "scene.tif").write_bytes(b"x")
    luigi_config("data", "images", str(tmp_path / "*" / "scene.tif"))
    with pytest.raises(InputError, match=r"y/scene\.tif: two images share the name 'scene' \(.*x/scene\.tif\)"):
        list_images()


def test_ambiguous_spacenet_label_match_is_an_error(tmp_path, luigi_config):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    (tmp_path / "img" / "RGB_AOI_2_Vegas_img1.tif").write_bytes(b"x")
    for n in ("buildings_AOI_2_Vegas_img1", "roads_AOI_2_Vegas_img1"):
        (tmp_path / "lab" / f"{n}.geojson").write_text("{}")
    luigi_config("data", "images", str(tmp_path / "img"))
    luigi_config("data", "labels", str(tmp_path / "lab"))
    with pytest.raises(InputError, match="both end in 'AOI_2_Vegas_img1'"):
        label_path("RGB_AOI_2_Vegas_img1")


def test_odd_file_names_are_ordinary_image_ids(tmp_path, luigi_config):
    names = ["with space", "it's \"quoted\"", "Zürich_東京", "x'; DROP TABLE labels;--"]
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for n in names:
        (tmp_path / "img" / f"{n}.tif").write_bytes(b"x")
        (tmp_path / "lab" / f"{n}.geojson").write_text("{}")
    luigi_config("data", "images", str(tmp_path / "img"))
    luigi_config("data", "labels", str(tmp_path / "lab"))
    assert list_images() == sorted(names)
    for n in names:
        assert label_path(n).name == f"{n}.geojson"


def test_symlink_escaping_the_data_directory_is_an_error(tmp_path, luigi_config):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"x")
    img = tmp_path / "img"
    img.mkdir()
    (img / "ok.tif").write_bytes(b"x")
    (img / "inner.tif").symlink_to(img / "ok.tif")  # a link inside the directory is fine
    luigi_config("data", "images", str(img))
    assert list_images() == ["inner", "ok"]
    (img / "evil.tif").symlink_to(outside / "secret.tif")
    with pytest.raises(InputError) as e:
        list_images()
    msg = str(e.value)
    assert msg.startswith(f"{img / 'evil.tif'}: resolves to {outside / 'secret.tif'}, outside the data directory")
    assert "[data] images" in msg
    (img / "evil.tif").unlink()
    (img / "dots.tif").symlink_to(Path("..") / "elsewhere" / "secret.tif")  # `..` in the link: same
    with pytest.raises(InputError, match="outside the data directory"):
        list_images()
    (img / "dots.tif").unlink()
    luigi_config("data", "images", str(img / ".." / "elsewhere" / "*.tif"))  # `..` the user wrote: their directory
    assert list_images() == ["secret"]


def test_image_ids_that_would_escape_the_workdir_are_refused(tmp_path, luigi_config, workdir):
    img = tmp_path / "img"
    img.mkdir()
    (img / "...tif").write_bytes(b"x")  # stem '..': tiles/../ would leave the workdir
    luigi_config("data", "images", str(img))
    with pytest.raises(InputError, match=r"image id '\.\.' is not usable as a directory name"):
        list_images()
    with pytest.raises(InputError, match="not usable as a directory name"):
        TileImage(image="../../etc", path=str(img / "...tif")).run()
