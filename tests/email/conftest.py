from collections.abc import Iterator

import pytest

from tests.fake_sendgrid import FakeSendGrid


@pytest.fixture
def sendgrid_server() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()
