# The project's spiders: members, multi, existing (run against the demo site)
# and quotes (quotes.toscrape.com, needs a real Scrappey API key).
