"""Knowledge-base gaps: what the agent failed to answer, grouped into topics and matched to the knowledge
base (missing article vs article to revise), with the gap report page.

In: a trailing window of conversation facts, agent events and KB snapshots. Out: `marts/kb_gaps/dt=D/`,
`reports/gaps/dt=D.html`."""
