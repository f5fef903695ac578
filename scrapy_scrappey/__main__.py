"""``python -m scrapy_scrappey``: see :mod:`scrapy_scrappey.cli`."""

from __future__ import annotations

import sys

from scrapy_scrappey.cli import main

if __name__ == "__main__":
    sys.exit(main())
