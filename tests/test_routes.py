"""The web extension's HTTP routes (ecad_nodes/routes.py), served by aiohttp's test server from the real handlers.

The last test starts a real ComfyUI server (COMFYUI_PATH) to check the pack registers them there.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from ecad_nodes import library, routes
from frontier_files import write_flux, write_pixart

SUMMARY = routes.SUMMARY_PATH


def get(raw_path_and_query: str) -> tuple[int, object]:
    """GET an already-encoded path and query from an app holding only the ECAD routes."""
    async def go():
        app = web.Application()
        app.add_routes(routes.routes)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(URL(raw_path_and_query, encoded=True))
            return response.status, await response.json()
    return asyncio.run(go())


def summary_of(name: str) -> tuple[int, dict]:
    from urllib.parse import quote
    return get(f"{SUMMARY}?name={quote(name, safe='')}")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A user folder and a pack folder with two good files, a corrupt one, and a secret file outside both."""
    user, pack, outside = tmp_path / "models" / "ecad_schedules", tmp_path / "pack" / "schedules", tmp_path / "outside"
    for d in (user, pack, outside):
        d.mkdir(parents=True)
    monkeypatch.setattr(library, "schedule_folders", lambda: [user, pack])
    library._cache.clear()
    write_flux(user / "flux-dev.json")
    write_pixart(pack / "sub" / "pixart.json")
    (user / "corrupt.json").write_text('{"format": "ecad-schedule", "version": 1, "steps": ')
    write_flux(outside / "secret.json", names=("secret-point",))
    return user, pack, outside


@pytest.fixture
def reads(monkeypatch):
    """Every path the library reads (the real reader still runs)."""
    seen: list[Path] = []
    real = library.read_limited

    def spy(path):
        seen.append(Path(path))
        return real(path)
    monkeypatch.setattr(library, "read_limited", spy)
    return seen


def test_the_list_has_every_file_the_corrupt_one_as_an_error_entry_and_the_heuristics(folders):
    status, body = get(routes.LIST_PATH)
    assert status == 200
    by_name = {e["name"]: e for e in body["schedules"]}
    assert list(by_name) == ["corrupt.json", "flux-dev.json", "sub/pixart.json", library.HEURISTICS_SOURCE]
    assert by_name["corrupt.json"]["error"].startswith("is not valid JSON (line 1")
    assert str(folders[0]) not in by_name["corrupt.json"]["error"]  # no server paths for the browser
    flux = by_name["flux-dev.json"]
    assert (flux["family"], flux["variant"], flux["steps"], flux["points"], flux["baselines"]) == ("flux", "flux-dev", 20, 5, 2)
    assert by_name[library.HEURISTICS_SOURCE]["kind"] == "heuristics"
    assert body["heuristics_source"] == library.HEURISTICS_SOURCE


def test_a_file_summary_has_layout_points_with_labels_and_figures_and_baselines(folders):
    schedule = library.load_source("flux-dev.json")
    status, body = summary_of("flux-dev.json")
    assert status == 200
    assert (body["name"], body["kind"], body["family"], body["variant"], body["steps"]) == ("flux-dev.json", "file", "flux", "flux-dev", 20)
    assert body["block_groups"] == [{"name": "double_blocks", "blocks": 19, "components": ["attn", "img_mlp", "txt_mlp"]},
                                    {"name": "single_blocks", "blocks": 38, "components": ["attn", "mlp_in", "out_proj"]}]
    assert body["bits_per_step"] == 171
    assert [p["label"] for p in body["points"]] == library.labels_for("flux-dev.json")
    first, source = body["points"][0], schedule.points[0]
    assert first["name"] == "gen40-a"
    assert first["speedup_kind"] == "measured" and first["speedup"] == pytest.approx(source.metrics.speedup)
    assert first["measured_speedup"] == pytest.approx(source.metrics.speedup)
    assert first["mac_speedup"] == pytest.approx(source.metrics.full_macs / source.metrics.macs)
    assert first["macs"] == pytest.approx(source.metrics.macs) and first["full_macs"] == pytest.approx(source.metrics.full_macs)
    assert (first["quality_metric"], first["quality_short"]) == ("image_reward", "IR")
    assert first["quality"] == pytest.approx(source.metrics.quality)
    assert first["computed_fraction"] == pytest.approx(source.mask.compute_fraction(), abs=1e-4)
    assert [b["name"] for b in body["baselines"]] == ["FORA every 2 steps", "FORA every 3 steps"]
    assert all(b["label"] is None for b in body["baselines"])  # not choosable in this file's dropdown
    assert body["provenance"] == {"tool": "ComfyUI-ECAD tests", "note": "random masks, made-up figures"}


def test_a_mac_only_file_says_its_speedups_are_mac_ratios(folders):
    status, body = summary_of("sub/pixart.json")
    assert status == 200
    assert {p["speedup_kind"] for p in body["points"]} == {"macs"}
    assert all(p["measured_speedup"] is None and p["speedup"] == p["mac_speedup"] for p in body["points"])
    assert body["points"][0]["label"].startswith("safe · ") and " MACs · PSNR " in body["points"][0]["label"]


def test_the_heuristics_source_lists_the_built_in_heuristics(folders):
    status, body = summary_of(library.HEURISTICS_SOURCE)
    assert status == 200 and body["kind"] == "heuristics"
    assert [p["label"] for p in body["points"]] == library.labels_for(library.HEURISTICS_SOURCE)
    assert "laid onto the connected model" in body["note"]


def test_a_corrupt_file_answers_an_error_entry_not_a_500(folders):
    status, body = summary_of("corrupt.json")
    assert status == 422
    assert body["name"] == "corrupt.json" and body["error"].startswith("is not valid JSON (line 1")


def test_a_binary_file_answers_an_error_entry(folders):
    (folders[0] / "binary.json").write_bytes(b"\x89PNG\x00\xff\xfe")
    status, body = summary_of("binary.json")
    assert status == 422 and body == {"name": "binary.json", "error": "is not UTF-8 text; expected a JSON schedule file"}


def test_an_unknown_name_is_404_and_a_missing_name_400(folders):
    assert summary_of("nope.json") == (404, {"name": "nope.json", "error": "not in the schedule folders (refresh the node list?)"})
    status, body = get(SUMMARY)
    assert status == 400 and body["error"] == "no schedule name given"


@pytest.mark.parametrize("raw", [
    "../outside/secret.json",
    "sub/../../../outside/secret.json",
    "..%2Foutside%2Fsecret.json",           # one layer of encoding: the server decodes it to ../outside/...
    "..%252Foutside%252Fsecret.json",       # two layers: %2F left after decoding
    "%2e%2e/outside/secret.json",
    "%252e%252e/outside/secret.json",
    "sub%5C..%5C..%5Coutside%5Csecret.json",  # backslashes
    "sub%255C..%255Csecret.json",
    "./flux-dev.json",
    "sub//pixart.json",
    "%2Fetc%2Fpasswd",
    "C:%5CWindows%5Cwin.ini",
    "C:/Windows/win.ini",
    "flux-dev.json%00.png",
])
def test_names_that_could_leave_the_folders_are_refused_with_400_and_nothing_is_read(folders, reads, raw):
    status, body = get(f"{SUMMARY}?name={raw}")
    assert status == 400, body
    assert "refused" in body["error"]
    assert reads == []


def test_an_absolute_path_to_a_listed_file_is_refused_too(folders, reads):
    status, body = summary_of(str(folders[0] / "flux-dev.json"))
    assert status == 400 and "absolute paths are refused" in body["error"]
    assert reads == []


def test_a_symlink_leading_outside_is_listed_as_refused_and_never_read(folders, reads):
    user, _, outside = folders
    os.symlink(outside / "secret.json", user / "linked.json")
    status, body = summary_of("linked.json")
    assert status == 400 and "leads outside the schedule folders" in body["error"]
    status, listing = get(routes.LIST_PATH)
    entry = next(e for e in listing["schedules"] if e["name"] == "linked.json")
    assert "leads outside the schedule folders" in entry["error"]
    assert outside / "secret.json" not in reads and user / "linked.json" not in reads
    assert "secret-point" not in str(listing)


def test_a_symlinked_folder_leading_outside_is_never_read(folders, reads):
    user, _, outside = folders
    os.symlink(outside, user / "elsewhere", target_is_directory=True)
    status, body = summary_of("elsewhere/secret.json")
    assert status in (400, 404)  # refused if listed, unknown if the scan does not follow the link
    assert "secret-point" not in str(body)
    assert all(outside not in p.parents for p in reads)


def test_a_symlink_inside_the_folder_is_followed(folders):
    user, pack, _ = folders
    os.symlink(user / "flux-dev.json", user / "alias.json")
    status, body = summary_of("alias.json")
    assert status == 200 and body["family"] == "flux"


def test_errors_never_quote_a_value_from_the_file(folders):
    user, _, outside = folders
    (user / "versioned.json").write_text('{"format": "ecad-schedule", "version": "s3cr3t-version"}')
    (user / "named.json").write_text('{"format": "ecad-schedule", "version": 1, "model": {"family": "s3cr3t family"}}')
    (outside / "leak.json").write_text('{"format": "ecad-schedule", "version": "s3cr3t-outside"}')
    os.symlink(outside / "leak.json", user / "leak.json")
    status, listing = get(routes.LIST_PATH)
    assert status == 200 and "s3cr3t" not in str(listing)
    by_name = {e["name"]: e for e in listing["schedules"]}
    assert by_name["versioned.json"]["error"] == ('has a "version" this release cannot read: ComfyUI-ECAD reads format '
                                                  'version 1')
    assert by_name["named.json"]["error"].startswith("model.family must be a name of at most 64 letters")
    assert by_name["leak.json"]["error"] == library.OUTSIDE
    for name in ("versioned.json", "named.json", "leak.json"):
        status, body = summary_of(name)
        assert status in (400, 422) and "s3cr3t" not in str(body)


def test_files_are_read_off_the_event_loop(folders, monkeypatch):
    """A file being read holds a worker thread, never the server: other requests are answered meanwhile."""
    import threading
    release = threading.Event()
    real = library.read_limited

    def held(path):
        assert release.wait(20), "the event loop was blocked while a file was read"
        return real(path)
    monkeypatch.setattr(library, "read_limited", held)

    async def go():
        app = web.Application()
        app.add_routes(routes.routes)
        async with TestClient(TestServer(app)) as client:
            reading = [asyncio.ensure_future(client.get(f"{SUMMARY}?name=flux-dev.json")),
                       asyncio.ensure_future(client.get(routes.LIST_PATH))]
            await asyncio.sleep(0.2)
            meanwhile = await asyncio.wait_for(client.get(f"{SUMMARY}?name={library.HEURISTICS_SOURCE}"), 10)
            still_reading = not any(r.done() for r in reading)
            release.set()
            done = [await r for r in reading]
            return meanwhile.status, still_reading, [r.status for r in done], (await done[0].json())["family"]
    assert asyncio.run(go()) == (200, True, [200, 200], "flux")


def test_register_adds_both_routes_to_a_route_table():
    table = web.RouteTableDef()
    routes.register(table)
    assert {(r.method, r.path) for r in table} == {("GET", routes.LIST_PATH), ("GET", routes.SUMMARY_PATH)}
    routes.register(table)
    assert len(list(table)) == 2


def test_outside_comfyui_there_is_no_server_to_register_with():
    """In a fresh interpreter (this session may have imported ComfyUI's ``server``), without ComfyUI on the path."""
    import subprocess
    import sys
    code = "from ecad_nodes import routes; print(routes.register_with_comfyui())"
    done = subprocess.run([sys.executable, "-c", code], cwd=routes.__file__.rsplit("/ecad_nodes/", 1)[0],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.comfy
def test_a_real_comfyui_server_serves_the_routes(tmp_path):
    import json
    import urllib.error
    import urllib.request

    from comfy_server import start_server
    from conftest import COMFYUI_ROOT

    def before_start(base):
        write_flux(base / "models" / "ecad_schedules" / "flux-dev.json")
        (base / "models" / "ecad_schedules" / "corrupt.json").write_text("{")

    server = start_server(COMFYUI_ROOT, tmp_path, before_start=before_start)
    try:
        listing = server.get("/api/ecad/schedules")
        assert [e["name"] for e in listing["schedules"]] == ["corrupt.json", "flux-dev.json", library.HEURISTICS_SOURCE]
        assert "error" in listing["schedules"][0]
        summary = server.get("/api/ecad/schedules/summary?name=flux-dev.json")
        assert summary["family"] == "flux" and len(summary["points"]) == 5
        assert server.get("/ecad/schedules/summary?name=flux-dev.json") == summary  # without the /api prefix too
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/api/ecad/schedules/summary?name=..%2F..%2Fuser%2Fcomfy.settings.json")
        assert refused.value.code == 400 and "refused" in json.loads(refused.value.read())["error"]
    finally:
        server.stop()


def test_the_list_searches_the_folders_once_whatever_the_number_of_files(folders, monkeypatch):
    user, _, _ = folders
    for i in range(20):
        write_flux(user / "many" / f"f{i:02d}.json")
    searches = []
    real = library.candidates
    monkeypatch.setattr(library, "candidates", lambda: searches.append(1) or real())
    status, body = get(routes.LIST_PATH)
    assert status == 200 and sum(e["name"].startswith("many/") and "error" not in e for e in body["schedules"]) == 20
    assert len(searches) == 1
