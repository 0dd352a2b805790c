"""The ``audit`` hub service: the audit trail's REST API for hub admins."""
