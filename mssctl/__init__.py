"""mssctl."""
