"""``memhp-relay``: fan Alertmanager's webhooks out to the controller on each node.

One receiver URL in Alertmanager (several stateless relay replicas behind it);
the relay finds each alert's controller from the alert's own labels with a
URL template (:mod:`.template`), delivers each node's alerts with a deadline,
bounded retries and a bounded queue per target (:mod:`.delivery`), and
answers Alertmanager 200 only when every target got its alerts, 503 otherwise
so that Alertmanager sends the group again (:mod:`.receiver`).  See
docs/relay.md.
"""
