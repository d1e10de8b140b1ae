"""OPC UA connector: a Sparkplug edge node fed by an OPC UA server's subscriptions or polls (see README.md)."""
