"""Scrapy integration for the Scrappey web-scraping API."""

from __future__ import annotations

__version__ = "0.1.0"
