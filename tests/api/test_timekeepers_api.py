"""``/v1/timekeepers`` on SQLite and PostgreSQL: anyone reads the table, only an admin imports a CSV file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from engine.store.db import transaction
from engine.workflows.keys import Role, create_key
from tests.api.test_app import error_of
from tests.conftest import REPO

SAMPLE = (REPO / "engine" / "data" / "samples" / "timekeepers.csv").read_text()
CSV = {"Content-Type": "text/csv"}


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]

    def call(self, method: str, url: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}", **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def api(sessions: sessionmaker[Session]) -> Iterator[Api]:
    with transaction(sessions) as session:
        keys = {role.value: create_key(session, name=role.value, role=role)[1]
                for role in (Role.ADMIN, Role.VIEWER, Role.BILLER)}
    app = create_app(sessions=sessions)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, keys)


def test_admins_import_and_any_key_reads(api: Api) -> None:
    for who in ("viewer", "biller"):
        error_of(api.call("POST", "/v1/timekeepers/import", who, content=SAMPLE, headers=CSV), 403, "forbidden")
    error_of(api.client.get("/v1/timekeepers"), 401, "unauthorized")
    imported = api.call("POST", "/v1/timekeepers/import", content=SAMPLE, headers=CSV)
    assert imported.status_code == 200, imported.text
    team = ([f"TK{n}" for n in range(1001, 1013)] + ["SYD088", "SYD741", "SYD742", "SYD743", "SYD744", "SYD745"]
            + [f"INV{n}" for n in range(5101, 5106)])  # the sample table's order
    assert imported.json() == {"created": team, "updated": [], "unchanged": 0, "rates_removed": 0,
                               "source_ids_removed": 0}
    again = api.call("POST", "/v1/timekeepers/import", content=SAMPLE, headers=CSV).json()
    assert (again["created"], again["updated"], again["unchanged"]) == ([], [], len(team))

    listed = api.call("GET", "/v1/timekeepers", "viewer")
    assert listed.status_code == 200 and [t["ledes_id"] for t in listed.json()] == sorted(team)
    okafor = api.call("GET", "/v1/timekeepers/TK1002", "viewer").json()
    assert {k: okafor[k] for k in ("name", "first_name", "last_name", "classification", "title")} == {
        "name": "Okafor, Daniel", "first_name": "Daniel", "last_name": "Okafor", "classification": "PARTNR",
        "title": "Partner"}
    assert okafor["source_ids"] == [{"source_system": "clio", "source_user_id": "345679"},
                                    {"source_system": "efimis",
                                     "source_user_id": "e0000000-0000-4000-8000-000000001002"},
                                    {"source_system": "sample", "source_user_id": "TK1002"}]
    assert okafor["rates"] == [  # money as exact decimal strings, never floats
        {"rate": "695.00", "currency": "GBP", "effective_from": "2025-01-01", "effective_to": None},
        {"rate": "875.00", "currency": "USD", "effective_from": "2025-01-01", "effective_to": None},
        {"rate": "925.00", "currency": "USD", "effective_from": "2026-01-01", "effective_to": None}]
    error_of(api.call("GET", "/v1/timekeepers/TK404", "viewer"), 404, "not_found")


def test_a_bad_file_gets_422_with_each_problem_positioned(api: Api) -> None:
    bad = SAMPLE + "TK1013,Ines,Alves,Partner,,sample,TK1001,1050,USD,2026-01-01,2025-12-31\n"
    line = len(SAMPLE.splitlines()) + 1
    error = error_of(api.call("POST", "/v1/timekeepers/import", content=bad, headers=CSV), 422,
                     "invalid_timekeepers")
    assert error["message"] == "upload: 2 problems; nothing was imported"
    assert error["details"] == [
        {"line": line, "column": "source_user_id",
         "message": "sample user TK1001 is already TK1001's (line 2); a source user is one timekeeper"},
        {"line": line, "column": "effective_to", "message": "2025-12-31 is before effective_from 2026-01-01"}]
    assert api.call("GET", "/v1/timekeepers").json() == []
    latin1 = "ledes_id,first_name,last_name,title\nTK1,Zoë,Lee,Partner\n".encode("latin-1")
    error_of(api.call("POST", "/v1/timekeepers/import", content=latin1, headers=CSV), 422, "invalid_timekeepers")


def test_the_routes_are_in_the_openapi_document(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/timekeepers"]) == {"get"} and set(paths["/v1/timekeepers/{ledes_id}"]) == {"get"}
    assert "text/csv" in paths["/v1/timekeepers/import"]["post"]["requestBody"]["content"]
    assert {"401", "403", "422"} <= set(paths["/v1/timekeepers/import"]["post"]["responses"])
