"""mssmtpd."""
