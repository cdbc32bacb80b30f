"""imapd."""
