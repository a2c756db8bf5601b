"""The interactive docs, offline."""

from __future__ import annotations


def test_docs_work_offline(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "Transaction" in schema["components"]["schemas"]
    assert "/v1/models/{model}/classify" in schema["paths"]
