"""verify_signature / check_signature / sign against HMACs computed independently here."""

import hashlib
import hmac

import pytest

from herald_client import SignatureError, check_signature, sign, verify_signature

SECRET = "upstream-secret"
BODY = b'{"type":"message","user_id":"alice","ref":"r1","data":{"text":"hi"}}'
T = 1_800_000_000


def header_for(body: bytes, t: int = T, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_valid_signature_verifies():
    assert verify_signature(SECRET, header_for(BODY), BODY, now=T + 10)


def test_body_as_str_and_secret_as_bytes_verify():
    assert verify_signature(SECRET.encode(), header_for(BODY), BODY.decode(), now=T)


def test_tampered_body_fails():
    assert not verify_signature(SECRET, header_for(BODY), BODY.replace(b"hi", b"ho"), now=T)


def test_wrong_secret_fails():
    assert not verify_signature("other-secret", header_for(BODY), BODY, now=T)


def test_timestamp_at_tolerance_passes_and_beyond_fails():
    header = header_for(BODY)
    assert verify_signature(SECRET, header, BODY, tolerance_s=300, now=T + 300)
    assert not verify_signature(SECRET, header, BODY, tolerance_s=300, now=T + 301)
    assert not verify_signature(SECRET, header, BODY, tolerance_s=300, now=T - 301)


def test_signature_of_other_timestamp_fails():
    # The timestamp is part of the signed message: changing t breaks the signature.
    mac = header_for(BODY).split("v1=")[1]
    assert not verify_signature(SECRET, f"t={T + 1},v1={mac}", BODY, now=T)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", f"t={T}", "v1=abcd", f"t=soon,v1=abcd", f"t={T},v1="],
)
def test_malformed_headers_fail(header):
    assert not verify_signature(SECRET, header, BODY, now=T)


def test_any_of_several_v1_signatures_may_match():
    good = header_for(BODY).split("v1=")[1]
    assert verify_signature(SECRET, f"t={T},v1={'0' * 64},v1={good}", BODY, now=T)


def test_sign_matches_independent_hmac():
    assert sign(SECRET, BODY, timestamp=T) == header_for(BODY)


def test_check_signature_says_what_is_wrong():
    with pytest.raises(SignatureError, match="tolerance"):
        check_signature(SECRET, header_for(BODY), BODY, now=T + 1000)
    with pytest.raises(SignatureError, match="does not match"):
        check_signature(SECRET, header_for(BODY), BODY + b" ", now=T)
    with pytest.raises(SignatureError, match="missing"):
        check_signature(SECRET, None, BODY, now=T)
    assert check_signature(SECRET, header_for(BODY), BODY, now=T) == T
