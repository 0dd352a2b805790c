"""The ``shipyard`` command (:mod:`.main`) and its command families.

:mod:`.common` holds what the commands share (the error they print, the hub's URL,
whose token they send); :mod:`.jobs`, :mod:`.models` and :mod:`.secrets` are the
``shipyard jobs``, ``models`` and ``secrets`` families.
"""
