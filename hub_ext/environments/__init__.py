"""Standard environments: ``images/<env>/`` declared once, built on this machine, checked.

- :mod:`.catalog`: the declared environments, their locks, the built ones and
  where they live;
- :mod:`.build`: building a lock into a virtual environment (``shipyard env build``);
- :mod:`.check`: whether a built environment still holds what its lock says.
"""
