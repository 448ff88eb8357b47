"""Persistence: SQLAlchemy Core tables, repositories, Alembic migrations (SQLite, PostgreSQL)."""
