"""tasks/split.py: the SplitDataset task and its key (the split functions are tested in
tests/footprints/test_split.py)."""
import json
from pathlib import Path

import luigi
import numpy as np
import rasterio
from affine import Affine

from tasks import split as split_mod
from tasks.keys import params_key, split_key, split_params
from tasks.split import SplitDataset, split_images

DEMO = ["demo_00", "demo_01", "demo_02", "demo_03"]


# ---------------------------------------------------------------- the task, with hand-made upstream outputs


class _Done(luigi.ExternalTask):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


def _write_image_tiles(root: Path, image: str, n: int = 2, size: int = 32):
    tdir, mdir = root / "tiles" / image, root / "masks" / image
    tdir.mkdir(parents=True)
    mdir.mkdir(parents=True)
    tiles, masks = [], []
    for i in range(n):
        tid = f"c{i * size:06d}_r000000"
        tr = Affine(0.5, 0, 500000 + i * size * 0.5, 0, -0.5, 4000000)
        for d, count in ((tdir, 3), (mdir, 1)):
            with rasterio.open(d / f"{tid}.tif", "w", driver="GTiff", width=size, height=size, count=count,
                               dtype="uint8", crs="EPSG:32616", transform=tr) as dst:
                dst.write(np.zeros((count, size, size), "uint8"))
        tiles.append({"tile_id": tid, "path": f"{tid}.tif", "col_off": i * size, "row_off": 0, "width": size,
                      "height": size, "transform": list(tr)[:6]})
        masks.append({"tile_id": tid, "path": f"{tid}.tif", "building_px": 0})
    (tdir / "index.json").write_text(json.dumps({"image": image, "tiles": tiles}))
    (mdir / "index.json").write_text(json.dumps({"image": image, "tiles": masks}))
    return {"tiles": _Done(path=str(tdir / "index.json")), "masks": _Done(path=str(mdir / "index.json"))}


def test_split_dataset_task(tmp_path, workdir, monkeypatch):
    ups = {im: _write_image_tiles(tmp_path, im) for im in DEMO}
    monkeypatch.setattr(split_mod, "upstream", lambda im: ups[im])
    monkeypatch.setattr(split_mod, "labelled_images", lambda: list(DEMO))
    task = SplitDataset()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    out = json.loads(Path(task.output().path).read_text())
    assert Path(task.output().path).is_relative_to(workdir / "splits")
    assert out["images"] == {"train": ["demo_00", "demo_01"], "val": ["demo_02"], "test": ["demo_03"]}
    assert out["counts"] == {"train": 4, "val": 2, "test": 2}
    for s, entries in out["splits"].items():
        for e in entries:
            assert e["image"] in out["images"][s]
            assert Path(e["tile"]).is_file() and Path(e["mask"]).is_file()
            assert Path(e["tile"]).name == Path(e["mask"]).name
    assert split_images() == out["images"]


def test_split_key_changes_with_the_split_config(luigi_config, monkeypatch):
    monkeypatch.setattr(split_mod, "labelled_images", lambda: list(DEMO))
    a = SplitDataset().key()
    assert a == split_key(DEMO) == params_key("image", split_params(DEMO))  # the key of existing workspaces
    luigi_config("split", "test_images", "demo_00")
    b = SplitDataset().key()
    assert a != b
    assert split_images()["test"] == ["demo_00"]
