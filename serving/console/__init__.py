"""The web console: the API's pages for people, under `/console`.

Server-rendered Jinja2 templates (`templates/`), one CSS file and HTMX (`static/`), behind
the API keys: sign in with a key, then a signed session cookie (see `security`), CSRF
tokens on every form and role checks on every page (see `deps`). Areas: `risk` (review
queue, cases, decisions, daily summary), `marketing`, `admin` (models, API keys).
"""
