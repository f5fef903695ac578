"""The built-in ban detectors, one per anti-bot vendor.

Each rule follows /work/shared/reference/antibot-signatures.md: it fires on a
STRONG signal (emitted only on a refusal or challenge), or on a MEDIUM one
together with a refusing status or a near-empty body; never on a WEAK one
(vendor presence: ``__cf_bm``/``_abck``/``_px*``/``datadome`` cookies, a tag
or sensor script, ``server: cloudflare``, a Turnstile or reCAPTCHA widget in
a form), and never on English title text alone. Vendor cookies are not used
at all: a site's own 403 on a protected site carries them too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._page import Page

# Cloudflare error codes that refuse the visitor (1005-1009 ASN/IP/country
# bans, 1010 browser signature, 1012/1020 access denied, 1015 rate limit);
# config errors such as 1003 "Direct IP access" are not bans.
_CF_BAN_CODE = re.compile(rb'cf-error-code">\s*10(?:0[5-9]|1[025]|20)\b')
# Cloudflare's challenge images (older pages).
_CF_TRACE = re.compile(rb"/cdn-cgi/images/trace/(?:jsch|captcha|managed)/")
# Akamai's behavioural challenge container / iframe.
_AKAMAI_CHALLENGE = re.compile(rb"sec-(?:if-cpt-container|cpt-if)")
# Akamai's reference id "#18.<hex>.<epoch>.<hex>", raw or entity-encoded
# ("Reference&#32;&#35;18&#46;…"); the long epoch keeps prose ("reference
# #3.1.2") out.
_AKAMAI_REF = re.compile(
    rb"reference(?:\s|&#32;)*(?:#|&#35;)\s*\d+(?:\.|&#46;)[0-9a-f]{6,}(?:\.|&#46;)\d{9,}"
)
# Kasada's challenge script: /<uuid>/<uuid>/p.js
_KASADA_PJS = re.compile(rb"/[0-9a-f-]{36}/[0-9a-f-]{36}/p\.js")


def cloudflare(page: Page) -> bool:
    """Challenge pages (``cf-mitigated``, ``_cf_chl_opt``, orchestrate
    scripts) and 1xxx block pages (``block_headline``, ban error codes)."""
    if page.header(b"cf-mitigated") == b"challenge" or "cf_chl_" in page.url:
        return True
    if b"cf_chl" in page.text and page.has(
        b"_cf_chl_opt", b"_cf_chl_ctx", b"__cf_chl_f_tk=", b"__cf_chl_rt_tk="
    ):
        return True
    if b"/cdn-cgi/" in page.text and (
        b"/orchestrate/" in page.text or _CF_TRACE.search(page.text) is not None
    ):
        return True
    if b"cf-error-details" in page.text and (
        b'data-translate="block_headline"' in page.text
        or _CF_BAN_CODE.search(page.text) is not None
    ):
        return True
    return page.refusing and _cloudflare_refusal(page)


def _cloudflare_refusal(page: Page) -> bool:
    title = page.title
    if title.startswith(b"attention required! | cloudflare") or title.endswith(
        b"used cloudflare to restrict access"
    ):
        return True
    if not page.header(b"server").startswith(b"cloudflare"):
        return False  # a site's own 403 behind Cloudflare
    return page.has(
        b'id="challenge-form"', b'id="cf-challenge-running"', b'id="cf-please-wait"'
    ) or (
        b"turnstile-wrapper" in page.text and b"challenges.cloudflare.com" in page.text
    )


def datadome(page: Page) -> bool:
    """``x-dd-b``, the ``var dd={…}`` block config, captcha-delivery.com
    scripts and iframes."""
    if page.header(b"x-dd-b"):
        return True
    if page.refusing and (
        page.header(b"x-datadome-cid") or page.header(b"server") == b"datadome"
    ):
        return True
    if b"captcha-delivery.com" not in page.text:
        return False
    return page.refusing or page.has(
        b"var dd={",
        b"ct.captcha-delivery.com/c.js",
        b"ct.captcha-delivery.com/i.js",
        b"captcha-delivery.com/captcha/",
        b"captcha-delivery.com/interstitial/",
    )


def perimeterx(page: Page) -> bool:
    """The block template (``px-captcha`` meta and element, PX assignments)
    and its JSON form."""
    if not _short(page):
        return False  # PX serves its page on 403/429 by design
    if b"px-captcha" in page.text and page.has(
        b'<meta name="description" content="px-captcha"', b'id="px-captcha"'
    ):
        return True
    if b'title="human verification challenge"' in page.text:
        return True
    if page.refusing and page.header(b"x-px-blocked"):
        return True
    if b"perimeterx" in page.text and page.has(
        b"/* perimeterx assignments */",
        b"perimeterx.com/whywasiblocked",
        b"perimeterx.net/whywasiblocked",
    ):
        return True
    if b"we believe you are using automation tools" in page.text:
        return True
    return page.refusing and (
        page.title == b"access to this page has been denied"
        or (b'"blockscript"' in page.text and b'"appid"' in page.text)
    )


def akamai(page: Page) -> bool:
    """Deny pages (reference id, errors.edgesuite.net, ``TCP_DENIED``) and
    the behavioural challenge (``sec-if-cpt``)."""
    if b"tcp_denied" in page.header(b"x-cache"):
        return True
    if page.refusing and page.header(b"akamai-cache-status").startswith(b"error"):
        return True
    if b"errors.edgesuite.net" in page.text:
        return True
    # Plain searches gate the regexes, which scan slower.
    if b"cpt" in page.text and _AKAMAI_CHALLENGE.search(page.text):
        return True
    if b"reference" in page.text and _AKAMAI_REF.search(page.text):
        return True
    if not _short(page):
        return False
    return b"behavioral-content" in page.text or (
        page.title == b"access denied" and b"have permission to access" in page.text
    )


def imperva(page: Page) -> bool:
    """The incident page, the tiny ``_Incapsula_Resource`` JS page and the
    reese84 interstitial."""
    url = page.url
    if "_Incapsula_Resource" in url or ("incident_id=" in url and _short(page)):
        return True
    if b"reeseskipexpirationcheck" in page.text or (
        b"interstitial" in page.text
        and page.has(
            b"__imperva_interstitial_started__", b'id="interstitial-inprogress"'
        )
    ):
        return True
    if b"incapsula" not in page.text:
        return False
    if b"incident_id=" in page.text or (
        _short(page) and b"incapsula incident id" in page.text
    ):
        return True
    # The resource also loads the sensor on served pages: only a page that
    # holds little else is the challenge.
    return b"_incapsula_resource" in page.text and page.size < 5000


def aws_waf(page: Page) -> bool:
    """``x-amzn-waf-action`` challenge/captcha, the custom block header, and
    the challenge page (``gokuProps``) on 202/405."""
    if page.header(b"x-amzn-waf-action") in (b"challenge", b"captcha"):
        return True
    if page.header(b"x-blocked-by-waf"):
        return True
    if page.status not in (202, 405):
        return False  # a site's own 403 may load the WAF SDK too
    return page.has(
        b"window.gokuprops", b"awswafcookiedomainlist", b"awswafintegration"
    )


def kasada(page: Page) -> bool:
    """``x-kpsdk-*`` headers or the KPSDK script on a 403/429."""
    if page.status not in (403, 429):
        return False
    if any(name.startswith(b"x-kpsdk-") for name in page.headers):
        return True
    if page.has(b"kpsdk", b"/ips.js"):
        return True
    return b"/p.js" in page.text and _KASADA_PJS.search(page.text) is not None


def f5(page: Page) -> bool:
    """The ASM reject page ("Your support ID is"), often served with 200,
    and Shape's interstitial hooks."""
    if page.has(b"istlwashere", b"_imp_apg_r_"):
        return True
    if (
        _short(page)
        and b"your support id is" in page.text
        and (
            page.title == b"request rejected"
            or b"the requested url was rejected" in page.text
        )
    ):
        return True
    return page.refusing and b"/tspd/" in page.text


def sucuri(page: Page) -> bool:
    """``x-sucuri-block``, the firewall block page and the JS challenge."""
    if page.header(b"x-sucuri-block"):
        return True
    if b"sucuri" not in page.text:
        return False
    if page.has(
        b"sucuri_cloudproxy_js", b"sucuri-firewall-block.css", b"cloudproxy@sucuri.net"
    ):
        return True
    return _short(page) and page.has(
        b"sucuri website firewall - access denied",
        b"sucuri website firewall - cloudproxy - access denied",
    )


def _short(page: Page) -> bool:
    """Whether English text may count: a refusing status or a near-empty page
    (an article quoting a block page is neither)."""
    return page.refusing or page.tiny


#: The built-in rules by vendor name, in the order they run.
RULES = {
    "cloudflare": cloudflare,
    "datadome": datadome,
    "perimeterx": perimeterx,
    "akamai": akamai,
    "imperva": imperva,
    "aws_waf": aws_waf,
    "kasada": kasada,
    "f5": f5,
    "sucuri": sucuri,
}
