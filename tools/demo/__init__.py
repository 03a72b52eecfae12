"""The demo behind the README's first command; see __main__."""
