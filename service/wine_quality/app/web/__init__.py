"""The web page for people (blueprint `web`): routes in `views`, what the templates show in
`presenters`, form protection in `csrf`."""

from wine_quality.app.web.views import bp

__all__ = ["bp"]
