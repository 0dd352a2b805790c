"""Model deployment: the deployer hub service (the model server it starts per replica runs
as the owner, in the owner's environment: :mod:`hub_ext.runtime.modelserver`)."""
