"""The dashboard at /ui: templates, static files (scripts, styles, vendored libraries) and the movie
map's math. Its routes are in `app.api.routes.ui`; its pages read the same JSON API clients use."""
