"""Settings of the scrapy-scrappey example project.

Everything Scrappey needs is the middleware line and the API key. The key is
read from the SCRAPPEY_API_KEY environment variable and never written here.
"""

from __future__ import annotations

import os
from pathlib import Path

BOT_NAME = "scrappey_example"

SPIDER_MODULES = ["scrappey_example.spiders"]
NEWSPIDER_MODULE = "scrappey_example.spiders"

# -- Scrappey ---------------------------------------------------------------

# The one line that sends every request through Scrappey.
DOWNLOADER_MIDDLEWARES = {"scrapy_scrappey.ScrappeyMiddleware": 950}

# Your key, from the environment: export SCRAPPEY_API_KEY=...
SCRAPPEY_API_KEY = os.environ.get("SCRAPPEY_API_KEY", "")

# The real API unless SCRAPPEY_API_URL points elsewhere (the demo points it at
# the local Scrappey server, python -m scrapy_scrappey.local).
SCRAPPEY_API_URL = (
    os.environ.get("SCRAPPEY_API_URL") or "https://publisher.scrappey.com/api/v1"
)

# Each spider picks its session scope with the scrappey_session_scope
# attribute; "spider" (one session for the whole crawl) is the default.

# -- The demo site ----------------------------------------------------------

# Base URL of the demo site (python -m example_project.demo_site). The spiders
# take it from `-a site=URL` first, then from this setting.
DEMO_SITE = os.environ.get("DEMO_SITE", "")

# -- Output -----------------------------------------------------------------

# Every spider writes its items to example_project/output/<spider>.jsonl,
# replaced on each run.
OUTPUT_DIR = Path(__file__).resolve().parent.parent / "output"
FEEDS = {
    str(OUTPUT_DIR / "%(name)s.jsonl"): {
        "format": "jsonlines",
        "encoding": "utf8",
        "overwrite": True,
    }
}

# -- Plain Scrapy -----------------------------------------------------------

ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS_PER_DOMAIN = 4
DOWNLOAD_TIMEOUT = 60
TELNETCONSOLE_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"
