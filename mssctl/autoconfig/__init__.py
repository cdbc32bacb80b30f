"""Mail client autoconfiguration over HTTPS: Thunderbird's config-v1.1 and
Outlook's Autodiscover (POX). `documents` builds and parses (pure),
`server` is the `autoconfig` listener (twisted.web)."""
