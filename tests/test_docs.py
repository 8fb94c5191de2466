"""API documentation and core routes: the OpenAPI document, Swagger UI, ReDoc, greeting, health."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import msgspec
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

import service
from tests.helpers import assert_invalid
from validation import requests as rq

DOC_ROUTES = {"/openapi.json", "/docs", "/redoc"}
# Routes outside the API document: the documentation itself, the Prometheus scrape and the
# operator console (a page, not an API).
UNDOCUMENTED = {*DOC_ROUTES, "/metrics", "/console"}
# The one write without a body: a new API key.
ROTATION = ("POST", "/agents/{agent_id}/api-key")
PUBLIC = {("GET", "/"), ("GET", "/health"), ("GET", "/health/ready"), ("GET", "/health/live")}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def served_pairs() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app answers, HEAD aside (Starlette adds it to GET)."""
    pairs = set()
    unlisted = {r.path for r in service.ROUTES if isinstance(r, Route) and not r.include_in_schema}
    assert unlisted == UNDOCUMENTED  # nothing else leaves the document
    for route in service.ROUTES:
        if not isinstance(route, Route) or route.path in UNDOCUMENTED:
            continue
        assert route.methods, route.path
        pairs |= {(method, route.path) for method in route.methods if method != "HEAD"}
    return pairs


def documented_pairs(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    schemas = document["components"]["schemas"]
    name = ref.removeprefix(prefix)
    assert name in schemas, f"dangling $ref {ref}"
    return schemas[name]


def refs(node: Any) -> list[str]:
    """Every $ref anywhere below `node`."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


# OpenAPI -----------------------------------------------------------------------


def test_document_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["paths"]


def test_documented_routes_equal_served_routes(document: dict[str, Any]) -> None:
    assert documented_pairs(document) == served_pairs()


def test_documentation_table_matches_route_table() -> None:
    expected = served_pairs()
    assert {(op.method, op.path) for op in service.API} == expected
    assert len(service.API) == len(expected), "an operation is documented twice"


def test_served_routes_cover_the_contract() -> None:
    contract = {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/health/live"),
        ("GET", "/users/{user_id}"),
        ("POST", "/agents"),
        ("GET", "/agents"),  # issue 13: the agent directory
        ("GET", "/agents/{agent_id}"),
        ("PUT", "/agents/{agent_id}"),
        ("GET", "/agents/{agent_id}/messages"),
        ("GET", "/agents/{agent_id}/messages/unread"),
        ("GET", "/agents/{agent_id}/messages/stream"),  # issue 6: the live inbox
        ("POST", "/agents/{agent_id}/api-key"),  # issue 4: a new key, no body
        ("PUT", "/agents/{agent_id}/messages/mark-read"),
        ("POST", "/messages"),
        ("PUT", "/messages/{message_id}"),
        ("GET", "/messages/{message_id}/metadata/{agent_id}"),
        ("POST", "/message_recipients"),
        ("PUT", "/message_recipients/{message_id}/{recipient_id}"),
        ("POST", "/agent_message_metadata"),
        ("PUT", "/agent_message_metadata/{metadata_id}"),
        ("POST", "/conversations"),
        ("GET", "/conversations"),
        ("GET", "/conversations/{conversation_id}"),
        ("PUT", "/conversations/{conversation_id}"),
        ("GET", "/conversations/{conversation_id}/details"),
        ("POST", "/cli/echo"),
    }
    assert served_pairs() == contract


def test_doc_routes_are_not_documented(document: dict[str, Any]) -> None:
    assert not DOC_ROUTES & set(document["paths"])
    assert not any(path.startswith("/static") for path in document["paths"])


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = refs(document)
    assert found
    for ref in found:
        resolve(document, ref)


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    operation_ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_every_request_body_references_a_component(document: dict[str, Any]) -> None:
    bodies = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            bodies += 1
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in schema, (method, path, schema)
            component = resolve(document, schema["$ref"])
            assert component["type"] == "object", (method, path)
    assert bodies == sum(1 for op in service.API if op.body is not None)
    writes = {pair for pair in documented_pairs(document) if pair[0] in {"POST", "PUT"}}
    assert bodies == len(writes - {ROTATION})


def test_unknown_fields_are_forbidden_in_the_schema(document: dict[str, Any]) -> None:
    """Every request body refuses unknown fields, and the schema says so."""
    bodies = {op.body for op in service.API if op.body is not None}
    assert bodies
    for body in bodies:
        assert issubclass(body, rq.Input), body
        assert body.__struct_config__.forbid_unknown_fields, body
        (emitted,) = msgspec.json.schema_components([body])[1].values()
        component = document["components"]["schemas"][body.__name__]
        assert emitted.get("additionalProperties") is False, body
        assert component.get("additionalProperties") is False, body.__name__


def test_request_schemas_list_the_struct_fields(document: dict[str, Any]) -> None:
    for op in service.API:
        if op.body is None:
            continue
        component = document["components"]["schemas"][op.body.__name__]
        assert set(component["properties"]) == set(op.body.__struct_fields__), op.path
        assert component.get("description"), op.body.__name__


def test_documented_success_status_matches_the_contract(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            success = {code for code in operation["responses"] if code.startswith("2")}
            creates = method == "post" and path not in {"/cli/echo", "/agents/{agent_id}/api-key"}
            assert success == ({"201"} if creates else {"200"}), (method, path)


# Security and error responses ----------------------------------------------------


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def response_schema(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    (media_type,) = response["content"]
    assert media_type == "application/json"
    return resolve(document, response["content"][media_type]["schema"]["$ref"])


def test_bearer_security_scheme_applies_to_all_but_the_public_operations(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    (scheme,) = schemes.values()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "MAILROOM_ADMIN_TOKEN" in scheme["description"]
    (name,) = schemes
    assert document["security"] == [{name: []}]
    public = set()
    for method, path, operation in operations(document):
        if "security" in operation:
            assert operation["security"] == [], (method, path)
            public.add((method, path))
    assert public == PUBLIC


def test_error_responses_where_they_apply(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        codes = {int(code) for code in operation["responses"] if not code.startswith("2")}
        guarded = (method, path) not in PUBLIC
        assert (401 in codes) == guarded, (method, path)
        assert (403 in codes) == guarded, (method, path)
        assert (413 in codes) == ("requestBody" in operation), (method, path)
        assert (429 in codes) == (method in {"POST", "PUT"}), (method, path)
        assert (422 in codes) == bool(operation["parameters"] or "requestBody" in operation), (
            method,
            path,
        )
        uses_database = path not in {"/", "/health/live", "/cli/echo"}
        assert (503 in codes) == uses_database, (method, path)
        assert 500 not in codes and 400 not in codes, (method, path)
    conflicts = {
        (method, path)
        for method, path, operation in operations(document)
        if "409" in operation["responses"]
    }
    assert conflicts == {
        ("POST", "/agents"),
        ("POST", "/messages"),
        ("PUT", "/messages/{message_id}"),
        ("POST", "/message_recipients"),
        ("POST", "/agent_message_metadata"),
        ("PUT", "/agent_message_metadata/{metadata_id}"),
    }


def test_error_bodies_are_a_detail_sentence_or_the_422_list(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if code.startswith("2"):
                continue
            assert response["description"], (method, path, code)
            schema = response_schema(document, response)
            assert schema["required"] == ["detail"] or "status" in schema["required"]
            detail = schema["properties"]["detail"]
            if code == "422":
                assert detail["type"] == "array", (method, path)
                item = resolve(document, detail["items"]["$ref"])
                assert set(item["required"]) == {"type", "loc", "msg"}
            elif path.startswith("/health"):
                assert code == "503" and set(schema["properties"]) == {"status", "detail"}
            else:
                assert detail == {"type": "string"}, (method, path, code)


def test_retry_and_authenticate_headers_are_documented(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for code, header in (("401", "WWW-Authenticate"), ("429", "Retry-After"),
                             ("503", "Retry-After")):  # fmt: skip
            response = operation["responses"].get(code)
            if response is not None:
                assert response["headers"][header]["required"] is True, (method, path, code)


def test_the_served_error_bodies_match_the_document(
    client: TestClient, document: dict[str, Any]
) -> None:
    """Real 404, 413 and 422 answers validate against the schemas the document gives."""
    too_large = b"x" * (service.Settings().max_body_bytes + 1)
    answers = [
        ("GET", "/agents/{agent_id}", client.get(f"/agents/{uuid.uuid4()}")),
        ("GET", "/agents/{agent_id}", client.get("/agents/nope")),
        ("PUT", "/agents/{agent_id}", client.put(f"/agents/{uuid.uuid4()}", content=too_large)),
    ]
    for method, path, response in answers:
        operation = document["paths"][path][method.lower()]
        schema = response_schema(document, operation["responses"][str(response.status_code)])
        body = response.json()
        assert set(body) == set(schema["required"]), (path, response.status_code, body)


def test_put_bodies_need_a_field(client: TestClient, document: dict[str, Any], agent) -> None:
    for method, path, operation in operations(document):
        if method == "PUT":
            component = resolve(
                document, operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            )
            assert component["minProperties"] == 1, path
    assert_invalid(client.put(f"/agents/{agent()['id']}", json={}), "body")


def test_echo_pattern_says_what_echo_accepts(client: TestClient, document: dict[str, Any]) -> None:
    component = document["components"]["schemas"]["EchoRequest"]
    pattern = re.compile(component["properties"]["message"]["pattern"])
    for text in ["hi", " hi\t", "\u3000a b\n", "x" * 1000, " ", "", "a\tb", "é", "x" * 1001, "<>"]:
        accepted = client.post("/cli/echo", json={"message": text}).status_code == 200
        assert bool(pattern.search(text)) == accepted, repr(text)


# Documentation pages -------------------------------------------------------------


class References(HTMLParser):
    """Collects the URLs of script, link, img and iframe elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_doc_page_uses_only_local_assets(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/openapi.json" in page
    assert "http://" not in page and "https://" not in page
    parser = References()
    parser.feed(page)
    assert parser.urls
    assert parser.urls == [url for url in parser.urls if url.startswith("/static/")]
    assert re.search(r'<script src="/static/[^"]+\.js"', page)
    for url in parser.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        suffix = url[url.rindex(".") :]
        kind = asset.headers["content-type"].split(";")[0].strip()
        assert kind in CONTENT_TYPES[suffix], (url, kind)


def test_missing_static_asset_is_404(client: TestClient) -> None:
    assert client.get("/static/swagger-ui/nope.js").status_code == 404


# Core routes ---------------------------------------------------------------------


def test_root_points_to_the_docs(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "docs"}
    assert isinstance(body["message"], str) and body["message"]
    assert body["docs"] == "/docs"
    assert client.get(body["docs"]).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/health", {"status": "healthy"}),
        ("/health/ready", {"status": "healthy"}),
        ("/health/live", {"status": "alive"}),
    ],
)
def test_health_probes(client: TestClient, path: str, body: dict[str, str]) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == body


def test_health_is_503_and_live_is_200_without_the_database(database_url: str) -> None:
    with TestClient(
        service.create_app(service.Settings(database_url=database_url, auth_required=False))
    ) as local:
        local.portal.call(local.app_state["pool"].close)
        unhealthy = local.get("/health")
        ready = local.get("/health/ready")
        live = local.get("/health/live")
    for response in (unhealthy, ready):
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "unhealthy"
        assert isinstance(body["detail"], str) and body["detail"]
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
