"""Root conftest: lets the doctests in ebooklet/ find their folder."""
