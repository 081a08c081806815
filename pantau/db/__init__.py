"""Database access shared by the services: schema, migrations, the write path and the registry."""
