"""Passwords never appear in messages: each URL shape that once leaked one fails on both backends
(against a closed port, or before connecting) without its secret in the exception, its chain, or
the name of any file it created; on SQLite a PostgreSQL connection string creates no file at all."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Iterator, List, Optional
from urllib.parse import quote

import pytest

from backend import cl

# (url template with {port}, the secret and the fragments of it a message must not show)
SHAPES = [
    ("postgresql://u:s3cr3tpw@127.0.0.1:{port}/db", ["s3cr3tpw"]),
    ("postgres://u@127.0.0.1:{port}/db?password=s3cr3tpw", ["s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?user=u&pass%77ord=s3cr3tpw", ["s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?sslpassword=SSLSECRET", ["SSLSECRET"]),
    ("postgresql://127.0.0.1:{port}/db?PASSWORD=s3cr3tpw", ["s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?%50ass%2577ord=s3cr3tpw", ["s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?oauth_client_secret=s3cr3tpw", ["s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?password=s3cr%33tpw", ["s3cr%33tpw", "s3cr3tpw"]),
    ("postgresql://127.0.0.1:{port}/db?password=s3cr&3tpw&sslmode=disable", ["s3cr", "3tpw"]),
    ("host=127.0.0.1 port={port} user=u password = s3cr3tpw", ["s3cr3tpw"]),
    ("host=127.0.0.1\tport={port}\tpassword\t=\ts3cr3tpw", ["s3cr3tpw"]),
    ("host=127.0.0.1 port={port} password='s3cr 3tpw'", ["s3cr", "3tpw"]),
    ("postgresql://u:s3cr?3tpw@127.0.0.1:{port}/db", ["s3cr", "3tpw"]),
    ("postgresql://u:s3cr#3tpw@127.0.0.1:{port}/db", ["s3cr", "3tpw"]),
    ("postgresql://u:s3cr/3tpw@127.0.0.1:{port}/db", ["s3cr", "3tpw"]),
    ("postgresql://u:s3cr@3tpw@127.0.0.1:{port}/db", ["s3cr", "3tpw"]),
    ("postgresql://u:s3cr/3tpw?x=1@127.0.0.1:{port}/db", ["s3cr", "3tpw"]),
    ("postgresql://u:12/3tpw?b=c@127.0.0.1:{port}/db", ["3tpw"]),
    ("postgresql://u:s3cr%zz3tpw@127.0.0.1:{port}/db", ["s3cr%zz3tpw"]),
    ("postgresql://u:s3cr3tpw@[::1/db", ["s3cr3tpw"]),
    ("u:s3cr3tpw@127.0.0.1:{port}/db", ["s3cr3tpw"]),
    ("mysql://u:s3cr3tpw@127.0.0.1:{port}/db", ["s3cr3tpw"]),
    ("sqlite:///host=127.0.0.1 password=s3cr3tpw", ["s3cr3tpw"]),
]


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or during."""
    seen: List[int] = []
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.append(id(current))
        yield current
        current = current.__cause__ or current.__context__


def shown_texts(error: BaseException) -> List[str]:
    texts = []
    for e in chain(error):
        texts += [str(e), repr(e), str(e.args), "".join(traceback.format_exception_only(type(e), e))]
    return texts


def assert_hidden(error: BaseException, secrets: List[str]) -> None:
    for text in shown_texts(error):
        for secret in secrets:
            assert secret not in text, text
            assert quote(secret, safe="") not in text, text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("template, secrets", SHAPES, ids=[t for t, _ in SHAPES])
async def test_no_shape_shows_its_password(tmp_path: Path, monkeypatch, free_port, template, secrets):
    monkeypatch.chdir(tmp_path)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.CloacinaError) as info:
        await ex.initialize(template.format(port=free_port))
    assert str(info.value)
    assert_hidden(info.value, secrets)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    "url",
    ["host=127.0.0.1 password=s3cr3tpw", "dbname=app user=me password='s3cr3tpw'",
     "sqlite:///host=db password=s3cr3tpw", "me:s3cr3tpw@db.internal/app"],
)
async def test_sqlite_refuses_a_postgres_connection_string(tmp_path: Path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(url)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "cloacina-postgres" in message and "sqlite:///" in message, message
    assert_hidden(info.value, ["s3cr3tpw"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres_only
async def test_a_sqlite_url_with_a_password_is_shown_redacted(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize("sqlite:///db?password=s3cr3tpw")
    assert "cloacina-sqlite" in str(info.value)
    assert_hidden(info.value, ["s3cr3tpw"])


async def test_a_url_with_a_lone_surrogate_is_not_echoed():
    ex = cl.UnifiedExecutor()
    with pytest.raises(ValueError) as info:
        await ex.initialize("postgresql://u:s3cr3tpw\ud800@127.0.0.1:1/db")
    assert "database_url" in str(info.value)
    assert_hidden(info.value, ["s3cr3tpw"])
