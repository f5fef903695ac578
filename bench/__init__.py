"""Benchmarks of scrapy-scrappey: ``python -m bench`` (``--quick`` for a smoke run).

Each benchmark runs in its own subprocess (``python -m bench.<module>``) with
its servers in yet another process (``bench.servers``), so CPU and memory
numbers of the crawling process are not mixed with the servers'.
"""
