"""The official account's server callback on the wire: signatures, safe-mode crypto, safe XML.

wechatpy does the protocol (``check_signature``, ``WeChatCrypto``, ``parse_message``); this
module puts a hardened XML parser in front of it (no DTD, no entities, a size cap) and lets
the 16-byte random prefix of safe-mode encryption be supplied, so WeChat's published test
vector can be reproduced through the same code that answers WeChat.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import WeChatSigner, check_signature

MAX_BODY = 64 * 1024  # WeChat's pushes are a few hundred bytes; anything near this is hostile

_ALPHABET = string.ascii_letters + string.digits


class CallbackRejected(Exception):
    """The push is refused; ``reason`` is ``signature`` (403) or ``malformed`` (400)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def random_prefix() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def parse_xml(body: bytes | str) -> dict[str, str]:
    """A flat ``{tag: text}`` of a WeChat ``<xml>`` document, refusing DTDs, entities and huge bodies."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY:
        raise CallbackRejected("malformed", "body too large")
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise CallbackRejected("malformed", "DTD not allowed")  # checked before any parsing work
    try:
        root = safe_et.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise CallbackRejected("malformed", type(exc).__name__) from exc
    if root.tag != "xml":
        raise CallbackRejected("malformed", "root element is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child):
            raise CallbackRejected("malformed", "nested element")
        fields[child.tag] = child.text or ""
    return fields


def signature_of(*parts: str) -> str:
    """``sha1`` of the sorted, concatenated parts: WeChat's callback and message signatures."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


class CallbackCrypto:
    """Verification, decryption and encryption of official-account pushes.

    ``aes_key`` empty means plain mode. ``prefix`` supplies the 16 random bytes that lead
    each encrypted message (random by default; fixed only to reproduce a test vector).
    """

    def __init__(self, token: str, aes_key: str, appid: str, prefix: Callable[[], str] = random_prefix):
        self.token = token
        self.appid = appid
        self.encrypted = bool(aes_key)
        self._crypto = WeChatCrypto(token, aes_key, appid) if aes_key else None
        make_prefix = prefix

        class _Prp(PrpCrypto):
            def get_random_string(self) -> str:
                return make_prefix()

        self._prp = _Prp

    def check(self, signature: str, timestamp: str, nonce: str) -> None:
        try:
            check_signature(self.token, signature or "", timestamp or "", nonce or "")
        except InvalidSignatureException as exc:
            raise CallbackRejected("signature") from exc

    def open(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], str]:
        """The plaintext fields and XML of a verified push (``query`` = its URL parameters)."""
        self.check(query.get("signature", ""), query.get("timestamp", ""), query.get("nonce", ""))
        outer = parse_xml(body)
        if not (self.encrypted and query.get("encrypt_type") == "aes"):
            if self.encrypted and "Encrypt" in outer and "MsgType" not in outer:
                raise CallbackRejected("malformed", "encrypted body without encrypt_type")
            return outer, body.decode() if isinstance(body, bytes) else body
        if not outer.get("Encrypt"):
            raise CallbackRejected("malformed", "no Encrypt element")
        expected = signature_of(self.token, query.get("timestamp", ""), query.get("nonce", ""), outer["Encrypt"])
        if not secrets.compare_digest(expected, query.get("msg_signature", "")):
            raise CallbackRejected("signature", "msg_signature")
        try:
            plain = self._crypto._decrypt_message(  # wechatpy's own path, given a parsed dict
                {"Encrypt": outer["Encrypt"]},
                expected,
                query.get("timestamp", ""),
                query.get("nonce", ""),
                PrpCrypto,
            )
        except InvalidSignatureException as exc:
            raise CallbackRejected("signature", "msg_signature") from exc
        except InvalidAppIdException as exc:
            raise CallbackRejected("malformed", "wrong appid") from exc
        except Exception as exc:  # bad base64, bad padding, bad length: a corrupt or forged body
            raise CallbackRejected("malformed", type(exc).__name__) from exc
        return parse_xml(plain), plain

    def seal(self, reply_xml: str, nonce: str | None = None, timestamp: str | None = None) -> str:
        """The reply as WeChat expects it: unchanged in plain mode, an encrypted envelope in safe mode."""
        if not self._crypto or not reply_xml:
            return reply_xml
        return self._crypto._encrypt_message(  # wechatpy's own path, with our prefix source
            reply_xml,
            nonce or str(secrets.randbelow(10**9)),
            timestamp or str(int(time.time())),
            self._prp,
        )

    def encrypt(self, xml: str, nonce: str, timestamp: str) -> tuple[str, str]:
        """``(Encrypt, msg_signature)`` for a push (the sandbox plays WeChat with this)."""
        assert self._crypto is not None
        encrypt = self._prp(self._crypto.key).encrypt(xml, self.appid).decode()
        return encrypt, signature_of(self.token, timestamp, nonce, encrypt)
