"""Model deployment: the deployer hub service and the model server it starts per replica."""
