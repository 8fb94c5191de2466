"""API documentation: the OpenAPI document, Swagger UI and ReDoc, all served locally."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailroom API</title>
<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="/static/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/static/swagger-ui/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
</script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailroom API</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/static/redoc/redoc.standalone.js"></script>
</body>
</html>
"""


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document, encoded once at start-up."""
    return Response(request.state.openapi, media_type="application/json")


async def swagger_ui(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)


async def redoc(request: Request) -> Response:
    return HTMLResponse(REDOC_PAGE)
