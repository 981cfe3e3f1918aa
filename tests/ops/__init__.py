"""Operations tests: real PostgreSQL, S3-compatible server, Kubernetes config, browser.

A package, so that its conftest does not shadow ``tests/conftest.py`` as module ``conftest``."""
