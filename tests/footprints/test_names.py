"""footprints.names: SpaceNet image ids and label matching."""
from pathlib import Path

from footprints.names import match_label


def test_match_label_by_stem_and_spacenet_id():
    files = [Path("/l/scene_a.geojson"), Path("/l/buildings_AOI_2_Vegas_img12.geojson")]
    assert match_label("scene_a", files) == files[0]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img12", files) == files[1]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img1", files) is None
    assert match_label("other", files) is None
