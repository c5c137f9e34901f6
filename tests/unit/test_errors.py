import pickle

import pytest

from byzer_like import errors
from byzer_like.errors import ALL_ERRORS, OverloadedError, RateLimitError


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_survives_pickling_with_its_fields(cls):
    err = cls("something failed; do X", param="temperature", code="bad", upstream_status=418)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert back.message == "something failed; do X" and str(back) == "something failed; do X"
    assert (back.param, back.code, back.upstream_status) == ("temperature", "bad", 418)
    assert back.status_code == cls.status_code


def test_rate_limit_keeps_retry_after():
    back = pickle.loads(pickle.dumps(OverloadedError("busy", retry_after=2.5)))
    assert isinstance(back, RateLimitError) and back.retry_after == 2.5 and back.status_code == 429


def test_openai_error_body_shape():
    body = errors.InvalidRequestError("bad top_p", param="top_p").to_dict()
    assert body == {"error": {"message": "bad top_p", "type": "invalid_request_error", "param": "top_p", "code": None}}


def test_status_and_exit_codes():
    assert errors.InvalidSpecError("x").exit_code == 2
    assert errors.AliasExistsError("x").exit_code == 2
    assert errors.ModelNotFoundError("x").status_code == 404
    assert errors.UpstreamError("x").status_code == 502
    assert errors.RequestTimeoutError("x").status_code == 504
    assert errors.ModelLoadError("x").exit_code == 1
