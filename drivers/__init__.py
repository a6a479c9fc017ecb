"""Field drivers: meter profiles, register decoding, Modbus reading and meter emulation."""
