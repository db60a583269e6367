"""Text generation for every app, page and API call. The engine modules know no Django; services.py does."""
