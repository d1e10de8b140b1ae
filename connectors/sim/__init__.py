"""Simulated reference plant (PLANT.md): a deterministic line model behind real OPC UA and Modbus TCP servers."""
