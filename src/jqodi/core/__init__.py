"""Core: the scenario, devices, models, profiles, costs, quantization, data and the contract types."""
