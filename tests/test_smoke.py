"""The service starts on a fresh database and answers its core routes."""


def test_health_and_sample_users(client):
    assert client.get("/health").json() == {"status": "healthy"}
    response = client.get("/users/2")
    assert response.status_code == 200
    assert response.json()["name"] == "Jane Smith"
