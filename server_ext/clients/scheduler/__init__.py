"""The scheduler service from a kernel, a terminal or the server.

- :mod:`~server_ext.clients.scheduler.client`: the REST client, one method per call;
- :mod:`~server_ext.clients.scheduler.jobs`: the steps of ``%schedule`` and the helpers
  every caller needs (the notebook a kernel runs, parameters, job names, webhook secrets);
- :mod:`~server_ext.clients.scheduler.pipelines`: what ``%pipeline`` and ``shipyard pipeline``
  share (the file's default, create-or-update, run parameters, the tables of a run's steps);
- :mod:`~server_ext.clients.scheduler.text`: times, triggers and the table of jobs, as users
  read them.
"""
