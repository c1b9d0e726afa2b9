"""The gateway on the secured Apache Kafka (TLS, SCRAM, ACLs) as its own principal `gateway`:
every route that touches Kafka works, and the broker refuses it nothing."""

from __future__ import annotations

import pytest

from framewire.broker.cluster import KafkaCluster
from framewire.broker.reading import read_topic
from framewire.broker.security import ADMIN, KafkaSecurity
from framewire.contracts import FrameCaptured
from framewire.contracts.codec import Codec
from framewire.errors import DataError
from framewire.runtime import Publisher
from tests.fixtures.gateway import API, running_gateway
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_kafka_security import denials

# a gateway process on the session's secured cluster: the long runs (-m slow)
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_gateway_principal_pushes_replays_reads_and_manages_cameras_unrefused(
        secure_kafka: KafkaCluster, secure_site: Site) -> None:
    settings, codec = secure_site.settings, Codec()
    # a letter of inference's (its source: frames.ready) for the gateway to replay
    admin = Publisher(settings, "inference")
    admin.dead_letter(DataError("corrupt_image", "test letter"), payload=b"frame bytes",
                      key=b"tls-dl", source=(settings.topic("frames.ready"), 0, 0),
                      camera_id="tls-dl")
    admin.flush(30)
    admin.close()
    # the gateway gets no admin password: it can only connect as itself
    admin_password = KafkaSecurity(secure_site.home).password_path(ADMIN)
    admin_password.unlink()
    with running_gateway(secure_site) as gw, gw.client("operator") as client:
        added = client.post(f"{API}/cameras", json={"camera_id": "tls-cam",
                                                    "url": "/srv/tls", "privacy_mode": False})
        assert added.status_code == 201, added.text
        assert [c["camera_id"] for c in client.get(f"{API}/cameras").json()] == ["tls-cam"]
        pushed = client.post(f"{API}/cameras/tls-cam/frames", content=jpeg(synthetic_frame(1)),
                             headers={"Content-Type": "image/jpeg"})
        assert pushed.status_code == 202, pushed.text
        letters = client.get(f"{API}/deadletters").json()
        assert [d["camera_id"] for d in letters] == ["tls-dl"]
        replayed = client.post(f"{API}/deadletters/replay", json={"reason": "corrupt_image"})
        assert replayed.json()["outcome"] == {
            f"replayed to {settings.topic('frames.ready')}": 1}, replayed.text
        status = client.get(f"{API}/status")
        assert status.status_code == 200, status.text
        assert client.delete(f"{API}/cameras/tls-cam").status_code == 204
    # read back as admin
    assert secure_kafka.security is not None
    admin_password.symlink_to(secure_kafka.security.password_path(ADMIN))
    frame_id = pushed.json()["frame_id"]

    def on_frames_raw() -> FrameCaptured | None:
        for msg in read_topic(settings, settings.topic("frames.raw")):
            record = codec.decode(msg.value(), FrameCaptured)
            if record.frame_id == frame_id:
                return record
        return None

    assert wait_until(on_frames_raw, 20, "the pushed frame").privacy is False
    assert denials(secure_kafka, secure_site) == set()
