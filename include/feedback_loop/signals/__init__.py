"""Signals: the metric registry and its SQL, A/B and shadow comparisons, sentiment, the action queue that
routes each raised metric to the component that should act, and the HTML signals report.

In: `marts/conversation_facts` (the day and its baseline window). Out: `marts/signal_metrics`,
`marts/action_queue`, `marts/signal_ab_tests`, `reports/dt=D/index.html` (templates/report.html.j2)."""
