"""Database layer: models, engine and sessions, migrations, and the queries of the pass."""
