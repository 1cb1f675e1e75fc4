"""Model: one row per conversation (intent, outcome, CSAT/CES, reopen, overrides, cost, latency) built from
the day's staged sources. In: `<lake>/staged/*/dt=D/`. Out: `<lake>/marts/conversation_facts/dt=D/`."""
