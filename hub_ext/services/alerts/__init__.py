"""The ``alerts`` hub service: Shipyard's own alerting, with no extra server.

In the embedded default nobody runs Prometheus and Alertmanager, yet a model
that starts failing, a job or pipeline that fails or misses its schedule, a
quota nearly used up, or a data directory filling up must reach someone. This service evaluates those rules
every ``evaluation_interval`` from what the scheduler and the deployer answer
on their REST APIs (read as a *monitor*: ``c.SchedulerService.monitors``) and
from the data directory's disk usage; every alert has a stable key, moves
pending → firing → resolved in its database, and notifies the owner and the
admins once when it fires and once when it resolves, through apprise (e-mail,
Slack, Teams, Matrix, webhooks: configuration, not code).

Rejected: shipping Alertmanager (one more server to run and secure in the
embedded default; the Prometheus rules in config/prometheus/ serve those who
run one), and notifying from each service (every service would need the
recipients, the deduplication and the SSRF guard).
"""
