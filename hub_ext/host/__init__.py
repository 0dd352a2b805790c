"""This machine: accounts, cgroups, GPUs, local processes and their identity.

What the hub, the spawners, the job executors and the deployment backends do to
the machine they run on lives here, configured by its callers, so that a fix to
one step (how a user's process is started, how a pid is told from a later one)
reaches every one of them.
"""
