"""Who may call what: API keys, authentication, the authorization rules and the limits."""
