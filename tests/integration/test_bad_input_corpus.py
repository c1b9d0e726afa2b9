"""The bad-input corpus through the real pipeline: each case ends as one result or one dead letter.

Images go through the real ingest code, each on its own camera; frames.raw records are produced
raw, as a foreign or broken producer would. The pipeline runs once for the module; each test
then checks one property of what came out. ``pytest -s`` prints a case → outcome table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Producer

from framewire.broker.client import EmbeddedBroker, client_config
from framewire.capture.ingest import Ingest
from framewire.capture.sources import CapturedImage
from framewire.contracts import DeadLetter, utcnow
from framewire.errors import TransientError
from framewire.ops.status import dead_letters
from framewire.runtime import StopSignal
from framewire.store.db import StoredResult, open_database
from tests.data.bad.generate import EXIF_SHOWN_SIZE, IMAGE_FILES, RECORDS, generate
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration
STAGES = ("preprocess", "inference", "storage")
RESULT = "result"

# Case → (expected outcome: RESULT or a dead-letter code, why).
EXPECTED: dict[str, tuple[str, str]] = {
    "truncated_jpeg": ("corrupt_image", "header intact so ingest passes it; pixels undecodable"),
    "zero_bytes": ("empty", "ingest: nothing was sent"),
    "random_bytes": ("not_an_image", "ingest: no known image signature"),
    "text_file": ("not_an_image", "ingest: no known image signature"),
    "bomb_60000x60000": ("too_many_pixels", "preprocess refuses it by header, before decoding"),
    "one_pixel": (RESULT, "tiny but valid: letterboxed like any frame"),
    "png_16bit": (RESULT, "OpenCV reduces 16 bits per channel to 8"),
    "cmyk_jpeg": (RESULT, "libjpeg converts CMYK to BGR"),
    "exif_rotated": (RESULT, "decoded upright; stored with the rotated size"),
    "record_wrong_fingerprint": ("unknown_schema", "no shipped schema has that fingerprint"),
    "record_missing_field": (
        "unknown_schema",
        "a schema without camera_id has its own fingerprint, which no service ships",
    ),
    "record_missing_field_truncated": (
        "undecodable",
        "the real fingerprint over a body that does not match it and ends early",
    ),
    "record_empty_camera": ("unknown_camera", "camera_id is empty"),
    "record_camera_not_key": ("unknown_camera", "camera_id differs from the Kafka key"),
    "record_bad_traceparent": (RESULT, "tracing must never drop a frame"),
}
assert set(EXPECTED) == set(IMAGE_FILES) | set(RECORDS), "every corpus case needs an outcome"


def camera_for(image_case: str) -> str:
    """The camera an image case is published on (camera ids allow no underscore)."""
    return f"cam-{image_case.replace('_', '-')}"


@dataclass
class Outcome:
    """What the pipeline made of one case."""

    rows: list[StoredResult] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return bool(self.rows or self.letters)

    @property
    def kind(self) -> str:
        """RESULT, a dead-letter code, or a description of anything else."""
        if len(self.rows) == 1 and not self.letters:
            return RESULT
        if len(self.letters) == 1 and not self.rows:
            return self.letters[0].code
        return f"{len(self.rows)} rows and {len(self.letters)} dead letters"


@dataclass
class CorpusRun:
    site: Site
    outcomes: dict[str, Outcome]


def publish_images(site: Site, images: dict[str, bytes]) -> None:
    """Camera → image, each through the real ingest code."""
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    for camera, data in images.items():
        ingest.offer(camera, CapturedImage(data, utcnow(), "bad-input-corpus"))
    ingest.close()


def produce_records(site: Site, records: dict[str, bytes]) -> None:
    """Each record as raw bytes to frames.raw, with its key and headers, as any producer could."""
    producer = Producer(client_config(site.settings, acks="all"))
    topic = site.settings.topic("frames.raw")
    for name, value in records.items():
        routing = RECORDS[name]
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v.encode()) for k, v in routing.headers.items()
        ]
        producer.produce(topic, value=value, key=routing.key.encode(), headers=headers)
    assert producer.flush(30) == 0, "the broker did not acknowledge every record"


def collect(site: Site, cases: dict[str, bytes]) -> dict[str, Outcome]:
    """Result rows and dead letters of every case, found by camera (images) or record."""
    db = open_database(site.settings.resolved_database_url)
    try:
        rows = db.query_results(limit=1000)
    finally:
        db.close()
    letters = [letter for _, letter in dead_letters(site.settings)]
    outcomes = {name: Outcome() for name in cases}
    for name, value in cases.items():
        out = outcomes[name]
        if name in RECORDS:
            # a rejected record's dead letter carries its bytes, whatever its key or fields
            out.rows = [r for r in rows if r.frame_id == RECORDS[name].frame_id]
            out.letters = [d for d in letters if d.payload == value]
        else:
            camera = camera_for(name)
            out.rows = [r for r in rows if r.camera_id == camera]
            out.letters = [d for d in letters if d.key == camera.encode()]
    return outcomes


def outcome_table(outcomes: dict[str, Outcome]) -> str:
    lines = [f"{'case':32} {'expected':16} {'outcome':16} {'by':11} reason"]
    for name, out in outcomes.items():
        by = out.letters[0].service if len(out.letters) == 1 else ""
        reason = out.letters[0].reason[:70] if len(out.letters) == 1 else ""
        lines.append(f"{name:32} {EXPECTED[name][0]:16} {out.kind:16} {by:11} {reason}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    """The whole corpus through one site; yields once every case has an outcome."""
    files = generate(tmp_path_factory.mktemp("bad-corpus"))
    cases = {name: path.read_bytes() for name, path in files.items()}
    site = Site(broker, tmp_path_factory.mktemp("bad-corpus-site") / "home")
    site.create_topics()
    try:
        site.start(*STAGES)
        publish_images(site, {camera_for(n): data for n, data in cases.items() if n in IMAGE_FILES})
        produce_records(site, {n: data for n, data in cases.items() if n in RECORDS})
        try:
            wait_until(
                lambda: all(o.resolved for o in collect(site, cases).values()),
                240,
                "a result row or a dead letter for every case",
                interval_s=1.0,
                ignoring=(TransientError,),
            )
        except AssertionError:
            print(outcome_table(collect(site, cases)), site.logs(), sep="\n")
            raise
        outcomes = collect(site, cases)
        print("\n" + outcome_table(outcomes))
        yield CorpusRun(site, outcomes)
    finally:
        site.stop()


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_case_ends_as_exactly_its_expected_result_or_dead_letter(
    corpus: CorpusRun, case: str
):
    expected, why = EXPECTED[case]
    assert corpus.outcomes[case].kind == expected, why


def test_exif_rotated_frame_is_stored_with_its_rotated_width_and_height(corpus: CorpusRun):
    (row,) = corpus.outcomes["exif_rotated"].rows
    assert (row.orig_width, row.orig_height) == EXIF_SHOWN_SIZE


def test_dead_letter_codes_differ_between_failure_kinds_and_reasons_are_readable(corpus: CorpusRun):
    codes_by_kind: dict[str, set[str]] = {}
    for name, out in corpus.outcomes.items():
        for letter in out.letters:
            codes_by_kind.setdefault(EXPECTED[name][0], set()).add(letter.code)
            assert len(letter.reason.strip()) > 20, (name, letter.reason)
            assert letter.service in STAGES or letter.service == "ingest", letter
    # one code per kind of failure, and no code shared by two kinds
    assert all(len(codes) == 1 for codes in codes_by_kind.values()), codes_by_kind
    assert len(set().union(*codes_by_kind.values())) == len(codes_by_kind), codes_by_kind


def test_services_stay_alive_and_keep_working_after_the_whole_corpus(corpus: CorpusRun):
    site = corpus.site
    assert all(site.alive(s) for s in STAGES), site.logs()
    camera = "cam-after-corpus"
    publish_images(site, {camera: jpeg(synthetic_frame(9))})

    def stored() -> int:
        db = open_database(site.settings.resolved_database_url)
        try:
            return db.count_results(camera_id=camera)
        finally:
            db.close()

    wait_until(stored, 120, "a good frame stored after the corpus", ignoring=(TransientError,))
    assert all(site.alive(s) for s in STAGES), site.logs()
