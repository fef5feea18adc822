"""Building types in PostGIS: each label's class in ``labels.class``; a value not listed is not
loaded and is named in the report."""
import json

from footprints.labels import load_labels
from footprints.labels.classes import ClassRule


def test_labels_store_their_class_and_unknown_values_are_rejected(pg, tmp_path):
    sq = [[39.0, -6.8], [39.0001, -6.8], [39.0001, -6.7999], [39.0, -6.7999], [39.0, -6.8]]
    feats = [{"type": "Feature", "properties": p, "geometry": {"type": "Polygon", "coordinates": [sq]}}
             for p in ({"condition": "Foundation"}, {}, {"condition": "Ruin"})]
    path = tmp_path / "typed_labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    report = load_labels(pg, path, classes=ClassRule("condition", ("Complete", "Incomplete", "Foundation"), "Complete"))
    with pg.cursor() as cur:
        cur.execute("SELECT feature_index, class FROM labels WHERE source = %s ORDER BY 1", ("typed_labels",))
        rows = cur.fetchall()
    pg.rollback()
    assert rows == [(0, "Foundation"), (1, "Complete")]
    d = report.as_dict()
    assert d["loaded"] == 2 and d["defaulted"] == 1 and d["unknown_classes"] == {"Ruin": 1}
    assert "Ruin" in d["rejected_features"][0]["reason"]
