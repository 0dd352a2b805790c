"""The REST API under /shipyard/api/ that the JupyterLab panel calls, served by
:class:`server_ext.extension.ShipyardExtension`.

- :mod:`~server_ext.handlers.server`: this server's profile and usage, and its experiments;
- :mod:`~server_ext.handlers.scheduler`, :mod:`~server_ext.handlers.deployer`,
  :mod:`~server_ext.handlers.audit`, :mod:`~server_ext.handlers.usage`,
  :mod:`~server_ext.handlers.alerts`: the services' routes the panel needs, forwarded as the
  server's user through the clients of :mod:`server_ext.clients`.

Every handler takes the server's own authentication and ``@authorized`` (resource
``shipyard``); tests/test_server_ext.py fails on any route that lets an anonymous request in.
"""
