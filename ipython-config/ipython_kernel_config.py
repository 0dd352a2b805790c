"""Load Shipyard's tracking magics (``server_ext``) in every kernel of a Shipyard environment.

Installed as ``{sys.prefix}/etc/ipython/ipython_kernel_config.py``, which IPython reads for
every kernel of that environment, before the user's own profile (whose settings win).
``extensions`` may already be a list set by another config file, or still a lazy value that
IPython merges into the default; appending works on both, and "server_ext" is added once.
"""

c = get_config()  # noqa: F821 (IPython provides get_config in config files)

extensions = c.IPKernelApp.extensions
if "server_ext" not in (extensions if isinstance(extensions, list) else []):
    extensions.append("server_ext")
