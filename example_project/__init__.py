"""The scrapy-scrappey example project, its demo website and ``python -m example_project.demo``."""
