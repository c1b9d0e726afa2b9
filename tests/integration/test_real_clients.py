"""Clients that know nothing of Framewire read its results: Debian's kcat, and the consumer
program of docs/subscribe.md (confluent-kafka + fastavro + the files in schemas/)."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from skimage import data as skdata

from framewire.store.db import StoredResult, open_database
from tests.fixtures.common import ensure_debian_packages
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
DOC = ROOT / "docs" / "subscribe.md"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
TRACEPARENT = re.compile(rb"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
CLIENT_TIMEOUT_S = 120


def crc64_avro(data: bytes) -> int:
    """The Avro specification's 64-bit Rabin fingerprint (CRC-64-AVRO), written out here so
    the check does not rest on the library it checks."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def frames_with_a_face(cameras: int, per_camera: int) -> list[tuple[str, bytes]]:
    """Synthetic frames (no faces) per camera, the last camera's first frame a face photo, so
    the detection counts are not all zero."""
    frames = [(f"cam-{c}", jpeg(synthetic_frame(i, c)))
              for i in range(per_camera) for c in range(cameras)]
    photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    frames[cameras - 1] = (f"cam-{cameras - 1}", jpeg(photo, 95))
    return frames


def stored_results(site: Site) -> dict[str, StoredResult]:
    db = open_database(site.settings.resolved_database_url)
    try:
        return {r.frame_id: r for r in db.query_results(limit=10_000)}
    finally:
        db.close()


def run_pipeline(site: Site, frames: list[tuple[str, bytes]]) -> dict[str, StoredResult]:
    """Publish ``frames`` through the real ingest code, wait until storage has every result."""
    site.start(*STAGES)
    ingest = publish(site, frames)
    assert ingest.publisher.counters.records_out == len(frames)
    wait_until(lambda: stored_count(site) >= len(frames), 240, f"{len(frames)} stored results")
    stored = stored_results(site)
    assert len(stored) == len(frames)
    return stored


def parse_kcat(out: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(key, headers, value) per record from kcat's ``-f '%k\\t%S\\t%h\\n%s\\n'`` output: the
    size field says how many bytes of the value follow, whatever bytes they are."""
    records, pos = [], 0
    while pos < len(out):
        eol = out.index(b"\n", pos)
        key, size, headers = out[pos:eol].split(b"\t")
        start, end = eol + 1, eol + 1 + int(size)
        assert out[end:end + 1] == b"\n", f"record at byte {pos} is not {int(size)} bytes long"
        records.append((key, headers, out[start:end]))
        pos = end + 1
    return records


def test_kcat_reads_detections_from_apache_kafka_and_fastavro_decodes_them(
        kafka_site: Site, request: pytest.FixtureRequest):
    ensure_debian_packages(request.config, {"kcat": "kcat"})
    site = kafka_site
    frames = frames_with_a_face(cameras=3, per_camera=4)
    stored = run_pipeline(site, frames)

    topic = f"{site.prefix}detections"
    command = ["kcat", "-C", "-b", site.settings.bootstrap_servers, "-t", topic,
               "-o", "beginning", "-e", "-q", "-f", "%k\\t%S\\t%h\\n%s\\n"]
    done = subprocess.run(command, capture_output=True, timeout=CLIENT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    records = parse_kcat(done.stdout)
    print("$", shlex.join(command))
    for key, headers, value in records:  # the values as hex: Avro is binary
        print(key.decode(), len(value), headers.decode(), value[:10].hex(), "...")
    assert len(records) == len(frames), done.stderr.decode(errors="replace")

    # the writer schema as a reader knows it: the shipped file of the version results are
    # written with, and its fingerprint as the 8 little-endian bytes after C3 01
    newest = max(SCHEMAS.glob("InferenceResult.v*.avsc"),
                 key=lambda p: int(p.name.split(".")[1].removeprefix("v")))
    parsed = fastavro.parse_schema(json.loads(newest.read_text()), named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    expected_fp = crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")) == expected_fp

    decoded = []
    for key, headers, value in records:
        assert value[:2] == SINGLE_OBJECT_MAGIC
        assert value[2:10] == expected_fp, value[2:10].hex()
        body = io.BytesIO(value[10:])
        result = fastavro.schemaless_reader(body, parsed, parsed)
        assert body.tell() == len(value) - 10, "bytes left over after the Avro body"
        result.update(result.pop("header"))  # the frame header's fields, as in a v1 result
        assert key.decode() == result["camera_id"]
        names = dict(h.split(b"=", 1) for h in headers.split(b","))
        assert TRACEPARENT.match(names[b"traceparent"]), headers
        decoded.append(result)

    frame_ids = [r["frame_id"] for r in decoded]
    assert len(set(frame_ids)) == len(frames)
    assert set(frame_ids) == set(stored)
    assert Counter(r["camera_id"] for r in decoded) == Counter(cam for cam, _ in frames)
    for r in decoded:
        row = stored[r["frame_id"]]
        assert (r["camera_id"], r["seq"], r["model_name"], len(r["detections"])) == (
            row.camera_id, row.seq, row.model_name, row.detection_count)
    assert any(r["detections"] for r in decoded), "the face photo gave no detection"

    # the one-liner of docs/subscribe.md, on this site's brokers and topic
    (line,) = re.findall(r"^```\n(kcat .*)\n```$", DOC.read_text(), re.MULTILINE)
    one_liner = [{"127.0.0.1:19092": site.settings.bootstrap_servers,
                  "detections": topic}.get(arg, arg) for arg in shlex.split(line)]
    done = subprocess.run(one_liner, capture_output=True, timeout=CLIENT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    printed = done.stdout.decode().splitlines()
    print("$ " + shlex.join(one_liner), *printed[:3], sep="\n")
    sizes = Counter(f"{r['camera_id']} {len(v)}" for r, (_, _, v) in zip(decoded, records,
                                                                       strict=True))
    assert Counter(p.rsplit(" ", 1)[0] for p in printed) == sizes
    assert all(TRACEPARENT.match(p.rsplit(" ", 1)[1].removeprefix("traceparent=").encode())
               for p in printed), printed


def doc_program() -> str:
    """The one Python program in docs/subscribe.md."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, f"docs/subscribe.md should hold one python block, not {len(blocks)}"
    return blocks[0]


def test_the_doc_program_imports_only_confluent_kafka_fastavro_and_the_standard_library():
    imported = set()
    for node in ast.walk(ast.parse(doc_program())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - sys.stdlib_module_names == {"confluent_kafka", "fastavro"}


@pytest.mark.parametrize("site_fixture", ["site", "kafka_site"])
def test_subscribe_to_results_doc_program_reads_every_result(
        site_fixture: str, request: pytest.FixtureRequest, tmp_path: Path):
    site: Site = request.getfixturevalue(site_fixture)
    frames = frames_with_a_face(cameras=3, per_camera=3)
    stored = run_pipeline(site, frames)

    # a reader's copy of the schema files, and nothing else
    schemas = tmp_path / "reader-schemas"
    schemas.mkdir()
    for path in SCHEMAS.glob("*.avsc"):
        shutil.copy(path, schemas)
    program = tmp_path / "subscribe.py"
    program.write_text(doc_program())
    env = {**os.environ, "FRAMEWIRE_BOOTSTRAP_SERVERS": site.settings.bootstrap_servers,
           "FRAMEWIRE_TOPIC_PREFIX": site.prefix, "SCHEMAS_DIR": str(schemas),
           "RESULTS_GROUP_ID": f"{site.prefix}results-printer"}
    done = subprocess.run([sys.executable, str(program), "--to-end"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    print(done.stdout[:1500])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]

    assert len(lines) == len(frames), done.stderr[-3000:]
    assert {line["frame_id"] for line in lines} == set(stored)
    for line in lines:
        row = stored[line["frame_id"]]
        assert line == {"frame_id": row.frame_id, "camera_id": row.camera_id, "seq": row.seq,
                        "model": row.model_name, "detections": row.detection_count}
    assert any(line["detections"] for line in lines), "the face photo gave no detection"
