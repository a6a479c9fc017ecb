"""DL/T 645-2007 meters on RS-485: framing, identifiers, a client and an emulated meter."""
