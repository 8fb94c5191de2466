"""Documentation (OpenAPI, Swagger UI, ReDoc, README.md and docs/) and the core routes."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema  # check-jsonschema's validator (dependency group `ship`)
import msgspec
import psycopg
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

import service
from settings import ENVIRONMENT, FIELDS, Settings
from tests.helpers import assert_invalid
from validation import requests

DOCUMENTED = [op for op in service.OPERATIONS if op.documented]
DOC_ROUTES = {"/openapi.json", "/docs", "/redoc"}
# Routes outside the API document: the documentation itself, the Prometheus scrape, the
# operator console (a page, not an API) and /mcp (JSON-RPC, described in docs/mcp.md).
UNDOCUMENTED = {*DOC_ROUTES, "/metrics", "/console", "/mcp"}
# The one write without a body: a new API key.
ROTATION = ("POST", "/agents/{agent_id}/api-key")
# POSTs that take no body and create nothing (issue 14): a new webhook secret, a retry.
WEBHOOK_ACTIONS = {
    ("POST", "/agents/{agent_id}/webhook-secret"),
    ("POST", "/agents/{agent_id}/deliveries/{delivery_id}/retry"),
}
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
    assert {(op.method, op.path) for op in DOCUMENTED} == expected
    assert len(DOCUMENTED) == len(expected), "an operation is documented twice"


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
        ("DELETE", "/agents/{agent_id}"),  # issue 15: retire (and purge) an agent
        ("GET", "/agents/{agent_id}/messages/search"),  # issue 15: full-text search
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
        # issue 14: webhooks
        ("POST", "/agents/{agent_id}/webhook-secret"),
        ("GET", "/agents/{agent_id}/deliveries"),
        ("POST", "/agents/{agent_id}/deliveries/{delivery_id}/retry"),
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
    assert bodies == sum(1 for op in DOCUMENTED if op.body is not None)
    writes = {pair for pair in documented_pairs(document) if pair[0] in {"POST", "PUT"}}
    assert bodies == len(writes - {ROTATION} - WEBHOOK_ACTIONS)


def test_unknown_fields_are_forbidden_in_the_schema(document: dict[str, Any]) -> None:
    """Every request body refuses unknown fields, and the schema says so."""
    bodies = {op.body for op in DOCUMENTED if op.body is not None}
    assert bodies
    for body in bodies:
        assert issubclass(body, requests.Input), body
        assert body.__struct_config__.forbid_unknown_fields, body
        (emitted,) = msgspec.json.schema_components([body])[1].values()
        component = document["components"]["schemas"][body.__name__]
        assert emitted.get("additionalProperties") is False, body
        assert component.get("additionalProperties") is False, body.__name__


def test_request_schemas_list_the_struct_fields(document: dict[str, Any]) -> None:
    for op in DOCUMENTED:
        if op.body is None:
            continue
        component = document["components"]["schemas"][op.body.__name__]
        assert set(component["properties"]) == set(op.body.__struct_fields__), op.path
        assert component.get("description"), op.body.__name__


def test_documented_success_status_matches_the_contract(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            success = {code for code in operation["responses"] if code.startswith("2")}
            creates = method == "post" and ("POST", path) not in {
                ("POST", "/cli/echo"),
                ROTATION,
                *WEBHOOK_ACTIONS,
            }
            expected = {"201"} if creates else {"204"} if method == "delete" else {"200"}
            assert success == expected, (method, path)


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
        assert (429 in codes) == (method in {"POST", "PUT", "DELETE"}), (method, path)
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
        *WEBHOOK_ACTIONS,
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
    too_large = b"x" * (Settings().max_body_bytes + 1)
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
        service.create_app(Settings(database_url=database_url, auth_required=False))
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


# The written docs: README.md and docs/ -----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# Environment variables the service's own code reads or sets (os.environ[...], .get, .setdefault).
ENVIRON_READ = re.compile(r"environ(?:\.get\(|\.setdefault\(|\[)\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
NOT_THE_SERVICE = {"tests", "bench", "static", "docs", "manifests", "compose"}


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where links and headings live."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its rendered text in lower case, punctuation dropped
    (letters, digits, `_`, `-` and spaces stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a page; GitHub numbers repeats: `x`, `x-1`, `x-2`."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = github_anchor(heading)
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...
    ]


def test_github_anchor_follows_githubs_rules() -> None:
    assert github_anchor("Security: who may call what") == "security-who-may-call-what"
    assert github_anchor("Fuzzing (schemathesis)") == "fuzzing-schemathesis"
    assert github_anchor("Pagination, cursors and `Link`") == "pagination-cursors-and-link"
    assert github_anchor("The [API](docs/api.md) by example") == "the-api-by-example"
    assert github_anchor("PgBouncer and statement timeouts") == "pgbouncer-and-statement-timeouts"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    """A link names a file of the repository that exists and, after #, a heading it has."""
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} names a file that does not exist"
        if fragment:
            assert resolved.suffix == ".md", f"{page.name}: {target} has an anchor into a non-page"
            assert fragment in anchors(resolved), (
                f"{page.name}: {target}: {resolved.name} has no heading with the id {fragment!r}"
            )


def test_the_readme_lists_every_page_of_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in relative_links(README)
        if target.startswith("docs/")
    }
    pages = list(DOCS.glob("*.md"))
    assert pages
    for page in pages:
        assert page.resolve() in linked, f"README.md's Documentation table lacks {page.name}"


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level."""
    assert f"\n## {heading}\n" in markdown, heading
    return markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def first_column(heading: str) -> list[str]:
    """The variables in the first column of the table under `## heading` of
    docs/configuration.md, one variable a row, in backticks."""
    text = section((DOCS / "configuration.md").read_text(encoding="utf-8"), heading)
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]  # past the header
    assert rows, heading
    variables = []
    for row in rows:
        first = row.split("|")[1].strip()
        assert re.fullmatch(r"`[A-Z][A-Z0-9_]*`", first), f"one variable in backticks: {row}"
        variables.append(first.strip("`"))
    return variables


def test_the_settings_table_lists_exactly_the_variables_the_settings_read() -> None:
    table = first_column("The settings")
    assert len(table) == len(set(table)), "a variable is listed twice"
    assert set(table) == set(ENVIRONMENT)


def test_the_settings_table_shows_the_settings_defaults() -> None:
    """A default written as one plain value (`10`, `required`) is the field's own."""
    defaults = Settings(workers=1)
    spelled = {True: "required", False: "off", None: "unset"}
    section = (ROOT / "docs" / "configuration.md").read_text().split("## The settings")[1]
    checked = 0
    for row in section.split("\n## ")[0].splitlines():
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        if len(cells) != 3 or not re.fullmatch(r"`[^`]+`", cells[1]):
            continue
        variable, default = cells[0].strip("`"), cells[1].strip("`")
        if variable not in FIELDS:
            continue
        value = getattr(defaults, FIELDS[variable][0])
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, tuple):
            value = ",".join(value)
        shown = spelled[value] if value is None or isinstance(value, bool) else str(value)
        assert shown == default, variable
        checked += 1
    assert checked >= 20, "the table's defaults are no longer plain values"


def service_sources() -> list[Path]:
    """The service's own Python files (not the tests, benchmarks or virtual environment)."""
    found = []
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or entry.name in NOT_THE_SERVICE:
            continue
        if entry.is_dir():
            found += entry.rglob("*.py")
        elif entry.suffix == ".py":
            found.append(entry)
    return found


def test_variables_read_outside_the_settings_are_documented() -> None:
    """A variable read straight from os.environ is a setting, or is documented as another
    program's: PROMETHEUS_MULTIPROC_DIR belongs to prometheus-client, which reads it at import."""
    others = set(first_column("Variables of other programs"))
    assert "PROMETHEUS_MULTIPROC_DIR" in others
    assert not others & set(ENVIRONMENT), "a setting is documented as another program's"
    sources = service_sources()
    assert ROOT / "service.py" in sources
    read = {name for path in sources for name in ENVIRON_READ.findall(path.read_text())}
    assert read, "no os.environ read found: is ENVIRON_READ still the way the code reads them?"
    assert read <= set(ENVIRONMENT) | others, read - set(ENVIRONMENT) - others


# The document and the service agree ------------------------------------------------
# Where schemathesis found the service refusing what the document allowed.


def body_properties(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(component, field, schema) of every request body field, the null branch left out."""
    for body in sorted({op.body.__name__ for op in DOCUMENTED if op.body is not None}):
        for field, schema in document["components"]["schemas"][body]["properties"].items():
            branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
            (branch,) = branches
            yield body, field, branch


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator that asserts formats, as schemathesis does."""
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


# Every text field, with a body it belongs in ({placeholders} for ids) and its route.
TEXT_FIELDS = [
    ("AgentCreate", "agent_name", "POST", "/agents", {}),
    ("AgentUpdate", "agent_name", "PUT", "/agents/{agent}", {}),
    ("MessageCreate", "content", "POST", "/messages", {}),
    ("MessageCreate", "message_type", "POST", "/messages", {"content": "c"}),
    ("MessageCreate", "status", "POST", "/messages", {"content": "c"}),
    ("MessageUpdate", "content", "PUT", "/messages/{message}", {}),
    ("MessageUpdate", "message_type", "PUT", "/messages/{message}", {}),
    ("MessageUpdate", "status", "PUT", "/messages/{message}", {}),
    ("MetadataCreate", "key", "POST", "/agent_message_metadata", {"message_id": "{message}"}),
    ("MetadataCreate", "value", "POST", "/agent_message_metadata",
     {"message_id": "{message}", "key": "k"}),
    ("MetadataUpdate", "key", "PUT", "/agent_message_metadata/{metadata}", {}),
    ("MetadataUpdate", "value", "PUT", "/agent_message_metadata/{metadata}", {}),
    ("ConversationCreate", "title", "POST", "/conversations", {}),
    ("ConversationCreate", "description", "POST", "/conversations", {}),
    ("ConversationUpdate", "title", "PUT", "/conversations/{conversation}", {}),
    ("ConversationUpdate", "description", "PUT", "/conversations/{conversation}", {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def rows(client: TestClient) -> dict[str, str]:
    """One agent, message, metadata item and conversation, by placeholder name."""
    agent = client.post("/agents", json={"agent_name": "agreement"}).json()
    message = client.post("/messages", json={"content": "agreement"}).json()
    metadata = client.post(
        "/agent_message_metadata", json={"message_id": message["id"], "key": "agreement"}
    ).json()
    conversation = client.post("/conversations", json={"title": "agreement"}).json()
    return {
        "agent": agent["id"],
        "message": message["id"],
        "metadata": metadata["id"],
        "conversation": conversation["id"],
    }


def test_every_documented_text_field_refuses_nul(document: dict[str, Any]) -> None:
    """PostgreSQL cannot store U+0000 in text, and the document says so on each text field."""
    text = set()
    for body, field, schema in body_properties(document):
        if schema.get("type") != "string" or "format" in schema or "anyOf" in schema:
            continue  # UUIDs, timestamps and IP addresses have a format of their own
        assert not validator(schema).is_valid("a\x00b"), (body, field, schema)
        text.add((body, field))
    # The echo message has a narrower pattern (tests/test_echo.py); each other one is below.
    assert text - {("EchoRequest", "message")} == {(b, f) for b, f, *_ in TEXT_FIELDS}


@pytest.mark.parametrize(("body", "field", "method", "path", "base"), TEXT_FIELDS)
def test_nul_in_a_text_field_is_422_at_that_field(
    client: TestClient, rows: dict[str, str], body, field, method, path, base
) -> None:
    sent = {
        name: value.format(**rows) if isinstance(value, str) else value
        for name, value in base.items()
    }
    sent[field] = "before\x00after"

    response = client.request(method, path.format(**rows), json=sent)

    assert_invalid(response, "body", field)
    sent[field] = f"other text\n\t\u3000é {uuid.uuid4().hex[:8]}"
    accepted = client.request(method, path.format(**rows), json=sent)
    assert accepted.status_code in (200, 201), accepted.text
    assert accepted.json()[field] == sent[field]


IP_TEXTS = [
    "",
    " ",
    "1.2.3.4",
    "255.255.255.255",
    "01.2.3.4",
    "1.2.3.4 ",
    "1.2.3",
    "256.1.1.1",
    "::1",
    "2001:DB8::1",
    "::ffff:1.2.3.4",
    "fe80::1%eth0",
    "1.2.3.4/32",
    "localhost",
]


@pytest.mark.parametrize("text", IP_TEXTS)
def test_ip_address_is_accepted_exactly_when_the_document_allows_it(
    client: TestClient, document: dict[str, Any], rows: dict[str, str], text: str
) -> None:
    """An empty ip_address is refused, as pydantic's IPvAnyAddress does in the original."""
    schemas = {
        body: schema for body, field, schema in body_properties(document) if field == "ip_address"
    }
    assert set(schemas) == {"AgentCreate", "AgentUpdate"}
    (allowed,) = {validator(schema).is_valid(text) for schema in schemas.values()}
    created = client.post("/agents", json={"agent_name": "ip", "ip_address": text})
    updated = client.put(f"/agents/{rows['agent']}", json={"ip_address": text})
    for response in (created, updated):
        if allowed:
            assert response.status_code in (200, 201), response.text
        else:
            assert_invalid(response, "body", "ip_address")
    assert text != "" or not allowed


def test_int_fields_are_documented_as_integers(document: dict[str, Any]) -> None:
    """JSON Schema counts 5.0 as an integer: the service takes it (next tests)."""
    ints = {(b, f) for b, f, schema in body_properties(document) if schema["type"] == "integer"}
    assert ints == {
        ("AgentCreate", "port"),
        ("AgentUpdate", "port"),
        ("MessageCreate", "importance"),
        ("MessageUpdate", "importance"),
    }
    for body, field in ints:
        schema = document["components"]["schemas"][body]["properties"][field]["anyOf"][0]
        assert validator(schema).is_valid(5.0) and not validator(schema).is_valid(5.5)


def test_integral_floats_are_taken_for_ints_and_stored_as_ints(
    client: TestClient, db: psycopg.Connection[dict[str, Any]]
) -> None:
    """As pydantic does for the original: 5.0 is 5; a 1.0 inside msg_metadata stays 1.0."""
    agent = client.post("/agents", json={"agent_name": "floats", "port": 8080.0})
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    message = client.post(
        "/messages", json={"content": "floats", "importance": 5.0, "msg_metadata": {"x": 1.0}}
    )
    assert message.status_code == 201, message.text
    message_id = message.json()["id"]
    assert (agent.json()["port"], message.json()["importance"]) == (8080, 5)
    assert client.put(f"/agents/{agent_id}", json={"port": 80.0}).json()["port"] == 80
    moved = client.put(f"/messages/{message_id}", json={"importance": 10.0, "content": "x"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["importance"] == 10
    port = db.execute("SELECT port FROM agents WHERE id = %s", (agent_id,)).fetchone()
    assert port == {"port": 80}
    stored = db.execute(
        "SELECT importance, msg_metadata::text AS metadata FROM messages WHERE id = %s",
        (message_id,),
    ).fetchone()
    assert stored["importance"] == 10
    assert re.sub(r"\s", "", stored["metadata"]) == '{"x":1.0}'  # as sent, a float


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/messages", {"content": "c", "importance": 5.5}, "importance"),
        ("/messages", {"content": "c", "importance": 11.0}, "importance"),
        ("/agents", {"agent_name": "a", "port": 80.5}, "port"),
        ("/agents", {"agent_name": "a", "port": 0.0}, "port"),
        ("/agents", {"agent_name": "a", "port": 1e300}, "port"),
        ("/agents", {"agent_name": "a", "port": "80"}, "port"),
    ],
)
def test_fractional_out_of_range_or_quoted_numbers_are_still_422(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    assert_invalid(client.post(path, json=body), "body", field)


# What generated clients and stateful tools read -------------------------------------


def test_the_stream_is_documented_as_text_whose_events_carry_json(
    document: dict[str, Any],
) -> None:
    """A generated client reads the body as a string, never as one MailboxItem."""
    operation = document["paths"]["/agents/{agent_id}/messages/stream"]["get"]
    (media_type,) = operation["responses"]["200"]["content"].items()
    name, content = media_type
    assert name == "text/event-stream"
    assert content["schema"]["type"] == "string"
    assert "MailboxItem" in content["schema"]["description"]
    assert "x-itemSchema" in content["schema"]["description"]
    events = content["x-itemSchema"]
    message, end = events["oneOf"]
    assert message["properties"]["event"] == {"const": "message"}
    assert message["properties"]["data"]["contentMediaType"] == "application/json"
    assert (
        resolve(document, message["properties"]["data"]["contentSchema"]["$ref"])
        == (document["components"]["schemas"]["MailboxItem"])
    )
    assert (
        resolve(document, end["properties"]["data"]["contentSchema"]["$ref"])
        == (document["components"]["schemas"]["ErrorDetail"])
    )
    for event in (
        {"event": "message", "id": "c", "retry": 1000, "data": "{}"},
        {"event": "shutdown", "data": "{}"},
    ):
        assert validator(events).is_valid(event), event
    assert not validator(events).is_valid({"event": "message", "data": "{}"})  # no id
    assert not validator(events).is_valid({"event": "message", "id": "c"})  # no data


def test_every_paginated_list_declares_the_link_header(
    client: TestClient, document: dict[str, Any]
) -> None:
    paginated = set()
    for method, path, operation in operations(document):
        takes_cursor = any(p["name"] == "cursor" for p in operation["parameters"])
        success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
        assert ("Link" in success.get("headers", {})) == takes_cursor, (method, path)
        if takes_cursor:
            paginated.add((method, path))
            link = success["headers"]["Link"]
            assert link["required"] is False  # not on the last page
    assert paginated == {
        ("GET", "/agents"),
        ("GET", "/agents/{agent_id}/messages"),
        ("GET", "/agents/{agent_id}/messages/unread"),
        ("GET", "/agents/{agent_id}/deliveries"),
        ("GET", "/agents/{agent_id}/messages/search"),
        ("GET", "/conversations"),
        ("GET", "/conversations/{conversation_id}/details"),
    }
    for _ in range(2):
        assert client.post("/conversations", json={"title": "page"}).status_code == 201
    served = client.get("/conversations", params={"limit": 1}).headers["link"]
    assert validator(link["schema"]).is_valid(served), served


CREATES = {"/agents": "agent_id", "/messages": "message_id", "/conversations": "conversation_id"}


def test_creates_link_to_every_operation_that_takes_the_new_id(
    document: dict[str, Any],
) -> None:
    by_id = {op["operationId"]: (m, p, op) for m, p, op in operations(document)}
    for method, path, operation in operations(document):
        links = operation["responses"].get("201", {}).get("links", {})
        if method != "POST" or path not in CREATES:
            assert not links, (method, path)
            continue
        name = CREATES[path]
        takers = {i for i, (_, p, _) in by_id.items() if "{" + name + "}" in p}
        assert {link["operationId"] for link in links.values()} == takers, path
        for link in links.values():
            assert link["parameters"] == {name: "$response.body#/id"}
            assert link["description"]


def test_the_links_lead_to_the_created_resource(
    client: TestClient, document: dict[str, Any]
) -> None:
    """Followed as a stateful tool follows them: every GET a link leads to answers 200."""
    by_id = {op["operationId"]: (m, p) for m, p, op in operations(document)}
    bodies = {"/agents": {"agent_name": "linked"}, "/messages": {"content": "linked"}}
    followed = 0
    for path, name in CREATES.items():
        created = client.post(path, json=bodies.get(path, {}))
        assert created.status_code == 201, created.text
        links = document["paths"][path]["post"]["responses"]["201"]["links"]
        for link in links.values():
            method, target = by_id[link["operationId"]]
            if method != "GET" or target.count("{") > 1 or target.endswith(("/stream", "/search")):
                continue  # writes need a body; the stream never ends; a search needs words
            response = client.get(target.replace("{" + name + "}", created.json()["id"]))
            assert response.status_code == 200, (target, response.text)
            followed += 1
    assert followed == 6  # 4 for the agent, 2 for the conversation


def test_a_query_parameter_without_a_default_is_documented_required(
    document: dict[str, Any],
) -> None:
    """The document says which query parameters a request must send: those its Struct
    gives no default (search's `q`), and only those."""
    checked = 0
    for op in DOCUMENTED:
        if op.query is None:
            continue
        info = msgspec.inspect.type_info(op.query)
        must = {field.name for field in info.fields if field.required}
        parameters = document["paths"][op.path][op.method.lower()]["parameters"]
        documented = {p["name"] for p in parameters if p["in"] == "query" and p["required"]}
        assert documented == must, (op.method, op.path)
        checked += len(must)
    assert checked >= 1  # the search's q
