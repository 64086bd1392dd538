"""The web page for people: one-wine form, CSV batch upload, model facts (blueprint `web`).

Registering the blueprint also adds the security headers to every response of the app
(`security.add_security_headers`, an app-wide after_request hook).
"""

from wine_quality.web.views import bp

__all__ = ["bp"]
