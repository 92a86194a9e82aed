"""URLs as logs may show them: scheme, host(:port) and path, never userinfo, query or fragment.

A presigned URL carries its signature in the query (`X-Amz-Signature=...`), a tokenised endpoint
in the query or the fragment (`?token=`, `#access_token=`), a store its credentials in the
userinfo (`https://key:secret@host`). Logs are kept and shared, so start-up shows only the part
of a URL that says where it points. A root module with no imports of ours, so diagnostics and
the flash-attn installer (which the image build runs with only a few files copied) both use it.

Malformed URLs fail closed: an unencoded `/` in a password (common in AWS secret keys) or a host
that is not a host are treated as userinfo to drop, at the price of a rare odd-looking path.
"""

from __future__ import annotations

import re

# Any scheme, then everything up to whitespace, a quote, `<>` or the start of the next URL, so a
# URL inside a longer value (`a=https://...`, `url1,url2`) is found and each is cut on its own.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_URL_RE = re.compile(rf"({_SCHEME})((?:(?!{_SCHEME})[^\s\"'`<>])*)")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&()*+,;=-]*)(?::\d*)?")
_CLOSING = ")]}.,;:!"
HIDDEN_HOST = "<redacted>"


def redact_urls(text: str) -> str:
    """`text` with every URL in it cut to scheme, host(:port) and path; other text unchanged."""
    return _URL_RE.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    # Closing punctuation after a URL ("(see https://h/p?t=x).") belongs to the text around it:
    # kept, since no letter or digit of a secret can hide in it.
    rest = match[2].rstrip(_CLOSING)
    return _cut(match[1], rest) + match[2][len(rest) :]


def _cut(scheme: str, rest: str) -> str:
    """Drop query and fragment first (they end the path), then any userinfo before the host."""
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    # The last `@` before the query: userinfo may hold unencoded `/`, `:` or `@`.
    rest = rest.rpartition("@")[2]
    host, slash, path = rest.partition("/")
    if not _HOST_RE.fullmatch(host):
        host = HIDDEN_HOST
    return f"{scheme}{host}{slash}{path}"
