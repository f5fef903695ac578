import os

# Tests only ever talk to 127.0.0.1; a system proxy must not intercept that.
for _name in (
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "SCRAPPEY_API_KEY",
):
    os.environ.pop(_name, None)
