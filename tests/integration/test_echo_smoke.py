from byzer_like import Client, DeploySpec
from byzer_like.spec import BackendSpec, ResourceSpec


def test_echo_roundtrip(deployed):
    deployed(DeploySpec(alias="smoke", backend=BackendSpec(model_type="custom/echo"),
                        resources=ResourceSpec(num_workers=2)))
    client = Client("smoke")
    assert client.chat("hello there world").text == "hello there world"
    assert "".join(c.text for c in client.stream("a b c")) == "a b c"
    assert sum(client.stat()["total_requests"]) == 2
