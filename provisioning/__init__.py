"""Provisioning of gateways by IT (setup script, keys, certificates, inventory)."""
