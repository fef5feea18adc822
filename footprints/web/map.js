// The map page of `footprints serve`: a finished run's buildings (GET /buildings, from PostGIS)
// drawn over the image's overlay PNG (WriteOutputs'). URL: /?run=<run key>&image=<image id>;
// without them, the first run and its first image.
"use strict";
const BUILDING_STYLE = { color: "#ff00ff", weight: 2, opacity: 1, fillColor: "#ff00ff", fillOpacity: 0.25 };
const query = new URLSearchParams(window.location.search);
const info = document.getElementById("info");
const map = L.map("map", { zoomSnap: 0, attributionControl: false });

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function main() {
  let run = query.get("run");
  if (!run) {
    const runs = (await getJSON("/runs")).runs;
    if (!runs.length) { info.textContent = "no finished runs in the database"; return; }
    run = runs[0];
  }
  const images = (await getJSON(`/runs/${encodeURIComponent(run)}/images`)).images;
  const img = images.find((i) => i.image === query.get("image")) || images[0];
  const [w, s, e, n] = img.bounds;
  const bounds = [[s, w], [n, e]];
  if (img.overlay) L.imageOverlay(img.overlay, bounds).addTo(map);
  map.fitBounds(bounds);
  const params = new URLSearchParams({ run: run, image: img.image, bbox: [w, s, e, n].join(",") });
  const fc = await getJSON(`/buildings?${params}`);
  L.geoJSON(fc, {
    style: BUILDING_STYLE,
    onEachFeature: (f, layer) => layer.bindPopup(
      `building ${f.properties.id}<br>confidence ${f.properties.confidence.toFixed(2)}` +
      `<br>${f.properties.area_m2.toFixed(1)} m²`),
  }).addTo(map);
  info.textContent = `${run} · ${img.image}: ${fc.features.length} buildings`;
  document.body.dataset.ready = "1";
}

main().catch((err) => { info.textContent = `error: ${err.message}`; });
