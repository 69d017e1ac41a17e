"""Random submissions never make the daemon answer 500, and never store half a job."""

from __future__ import annotations

import json
from typing import Any

from daemon_helpers import DaemonProcess
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.daemon.models import JobSubmission

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["0-3%2", "1:00", "afterok:1", "2x2:torus", "/tmp", "PENDING", "-1"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
payloads = st.dictionaries(
    st.sampled_from(sorted(JobSubmission.model_fields)) | st.text(max_size=6),
    json_values,
    max_size=6,
).map(lambda d: {**d, "hold": True})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.booleans())
# Found by this test: an explicit null for a field with a default (a 500 before the fix).
@example({"account": None, "name": None, "user": None, "hold": True}, True)
def test_random_submissions_get_201_or_a_named_4xx(
    shared_daemon: DaemonProcess, payload: dict[str, Any], give_argv: bool
) -> None:
    if give_argv:
        payload.setdefault("argv", ["true"])
    client = shared_daemon.client(retries=0)
    try:
        before = len(client.jobs())
        body = json.dumps(payload)
        status, doc = _post(shared_daemon, body)
        assert status == 201 or 400 <= status < 500, (status, doc, payload)
        after = len(client.jobs())
        if status == 201:
            assert after - before == len(doc["job_ids"])
            for job in doc["job_ids"]:
                client.action(job, "cancel")
        else:
            assert doc["error"].get("field") is not None, doc  # names the field (maybe "")
            assert after == before
    finally:
        client.close()


def _post(daemon: DaemonProcess, body: str) -> tuple[int, dict[str, Any]]:
    import http.client

    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = body.encode()
    conn.request(
        "POST",
        "/api/v1/jobs",
        body=data,
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Length": str(len(data))},
    )
    response = conn.getresponse()
    doc = json.loads(response.read())
    conn.close()
    return response.status, doc
